//! The daemon with its state on a disk that fills up: the operation fails cleanly, the daemon
//! stays up and answers `status`, and once space is back it works again without a restart.

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
            eprintln!(
                "SKIPPED: cannot mount a tmpfs to fill (root is needed): {}",
                String::from_utf8_lossy(&out.stderr)
            );
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
    append_config(
        dir,
        "[instances.contoso.backups.on-a-full-disk]\nlabel = \"Taken on a full disk\"",
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
