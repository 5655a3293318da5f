//! Full disks (small tmpfs mounts; root is needed, and under `CI=true` a test that cannot
//! mount fails): the state store's disk (the daemon stays up and answers `status`, and once
//! space is back it works again without a restart), the repository's disk (the backup fails
//! clearly, the earlier ones stay restorable) and the restore target's disk, where the
//! staging lives (the restore fails, the target is as it was).

use std::path::Path;

use crate::daemon::{Daemon, has, prepared};
use crate::helpers::*;

/// A tmpfs of `size` at `dir`, unmounted on drop.
pub(crate) struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    pub(crate) fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .ok()?;
        if !out.status.success() {
            let why = format!(
                "cannot mount a tmpfs to fill (root is needed): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

pub(crate) fn fill(file: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).unwrap();
    let block = vec![0x5au8; 64 << 10];
    for size in [block.len(), 512, 1] {
        while f.write_all(&block[..size]).is_ok() {}
    }
    let _ = f.sync_all();
}

#[test]
fn a_full_state_disk_fails_the_work_and_the_daemon_answers_and_recovers() {
    let tmp = prepared();
    let dir = tmp.path();
    let Some(_mounted) = Tmpfs::mount(&dir.join("state"), "24m") else {
        return;
    };
    let mut d = Daemon::start(dir, &[], &[]);
    d.wait_for("the first backup", || {
        has(dir, "before-import", "completed")
    });

    fill(&dir.join("state/filler"));
    // Records larger than a page: sled's writes need new pages whatever the layout of its
    // file (a small one can land in a page the file already has).
    let notes = "n".repeat(2000);
    append_config(
        dir,
        &format!(
            "[instances.contoso.backups.on-a-full-disk]\nlabel = \"Taken on a full disk\"\nnotes = \"{notes}\"\n[instances.contoso.backups.on-a-full-disk-2]\nnotes = \"{notes}\""
        ),
    );
    d.wait_for("the run on a full disk to fail", || {
        d.log().contains("No space left on device")
    });
    assert!(d.running(), "the daemon is alive:\n{}", d.log());
    assert!(!d.log().contains("panicked"), "{}", d.log());
    for cmd in ["status", "backups"] {
        let run = backplan(dir, &[cmd, "-c", "backplan.toml"]);
        assert_eq!(run.code, 0, "{cmd} answers: {}", run.transcript());
        assert!(run.stdout.contains("contoso"), "{}", run.stdout);
        assert!(
            run.stderr.contains("showing what it held when last read"),
            "{}",
            run.stderr
        );
    }

    // Space is back: the next run works, without a restart.
    std::fs::remove_file(dir.join("state/filler")).unwrap();
    append_config(dir, "[instances.contoso.backups.space-is-back]");
    d.wait_for("a backup once space is back", || {
        has(dir, "space-is-back", "completed")
    });
    // The backup cut short by the full disk is resolved as at a start, not left `running`.
    d.wait_for("the backup of the full disk resolved", || {
        has(dir, "on-a-full-disk", "completed")
    });
    assert!(d.running());
}

fn restic(dir: &Path, repo: &Path) -> std::process::Command {
    let mut c = std::process::Command::new("restic");
    c.arg("-r")
        .arg(repo)
        .arg("--password-file")
        .arg(dir.join("state/keys/local.key"))
        .arg("--no-cache");
    c
}

#[test]
fn a_full_repository_disk_fails_the_backup_and_keeps_the_earlier_ones() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    let Some(_mounted) = Tmpfs::mount(&dir.join("small"), "16m") else {
        return;
    };
    let repo = dir.join("small/repository");
    append_config(dir, "[storage.local]\npath = \"small/repository\"");
    let prod = dir.join("data/contoso");
    std::fs::create_dir_all(&prod).unwrap();
    std::fs::write(prod.join("a.txt"), "hello\n").unwrap();
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let first = backups_json(dir);
    let earlier = first[0]["snapshot_id"].as_str().unwrap().to_string();

    // 40 MiB that do not compress, into 16 MiB.
    std::fs::write(prod.join("big.bin"), crate::trees::random_bytes(40 << 20)).unwrap();
    append_config(
        dir,
        "[instances.contoso.backups.too-big]\nlabel = \"Larger than the disk\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let list = backups_json(dir);
    let b = list.iter().find(|b| b["key"] == "too-big").unwrap();
    assert_eq!(b["status"], "failed", "{b}");
    assert_eq!(b["snapshot_id"], serde_json::Value::Null);
    let error = b["error"].as_str().unwrap();
    assert!(error.contains("No space left on device"), "{error}");
    assert!(
        run.stdout.contains("FAIL") && run.stdout.contains("No space left on device"),
        "{}",
        run.transcript()
    );

    // The earlier backup: still listed, still in the repository, and it restores.
    let b = list.iter().find(|b| b["key"] == "before-import").unwrap();
    assert_eq!(b["status"], "completed");
    let out = restic(dir, &repo)
        .args(["restore", &earlier, "--target"])
        .arg(dir.join("restored"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored =
        std::fs::read_to_string(walk_find(&dir.join("restored"), "a.txt").expect("a.txt restored"))
            .unwrap();
    assert_eq!(restored, "hello\n");
    let check = restic(dir, &repo)
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// The first file named `name` under `root`.
fn walk_find(root: &Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(root).ok()? {
        let p = e.ok()?.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if p.is_dir()
            && let Some(found) = walk_find(&p, name)
        {
            return Some(found);
        }
    }
    None
}

#[test]
fn a_full_staging_disk_leaves_the_target_as_it_was() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    let Some(_mounted) = Tmpfs::mount(&dir.join("small"), "8m") else {
        return;
    };
    let prod = dir.join("data/contoso");
    std::fs::create_dir_all(&prod).unwrap();
    std::fs::write(prod.join("big.bin"), crate::trees::random_bytes(24 << 20)).unwrap();
    // The sandbox on the small disk: the staging folder is beside it, on the same disk.
    let sandbox = dir.join("small/sandbox");
    std::fs::create_dir_all(&sandbox).unwrap();
    std::fs::write(sandbox.join("old.txt"), "the sandbox before the restore").unwrap();
    let before = crate::trees::snapshot(&sandbox);
    let text = std::fs::read_to_string(dir.join("backplan.toml"))
        .unwrap()
        .replace(
            "path = \"data/contoso-sandbox\"",
            "path = \"small/sandbox\"",
        );
    std::fs::write(dir.join("backplan.toml"), text).unwrap();
    append_config(
        dir,
        "[restores.refresh]\nfrom = \"contoso/before-import\"\nto = \"contoso-sandbox\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout.contains("restore failed") && run.stdout.contains("No space left on device"),
        "{}",
        run.transcript()
    );
    assert!(
        crate::trees::snapshot(&sandbox) == before,
        "the target changed"
    );
    let left: Vec<String> = std::fs::read_dir(dir.join("small"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("backplan-"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "staging left on the full disk");
    // The space is back, for the sandbox's next restore.
    let free = nix_free(&dir.join("small"));
    assert!(free > 7 << 20, "{free} bytes free after the failed restore");
}

/// Free bytes on the filesystem of `path`.
fn nix_free(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a zeroed struct to fill.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_bavail as u64 * s.f_frsize as u64
}
