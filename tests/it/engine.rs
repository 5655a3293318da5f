//! The storage engine against real repositories, one test per hazard of rustic_core 0.13
//! that the engine guards against (each would fail without its guard), plus restore fidelity
//! and interoperability with the real `restic`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use backplan::engine::{Engine, EngineError, NoProgress, Repo, RusticEngine, SnapshotTags};
use uuid::Uuid;

use crate::helpers::restic_on;
use crate::trees::*;

pub(crate) struct Fixture {
    _tmp: tempfile::TempDir,
    pub(crate) root: PathBuf,
    pub(crate) repo: Repo,
    pub(crate) engine: RusticEngine,
}

/// A fresh local repository (key generated) and an engine; shared with `archiver`.
pub(crate) fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let repo = Repo {
        path: root.join("repository"),
        password_file: root.join("keys/local.key"),
        remote: None,
    };
    let engine = RusticEngine::new();
    engine.ensure(&repo, true).unwrap();
    Fixture {
        _tmp: tmp,
        root,
        repo,
        engine,
    }
}

fn tags(instance: &str) -> SnapshotTags {
    SnapshotTags {
        instance: instance.into(),
        backup: Uuid::from_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        ),
        kind: "on-demand".into(),
        ..Default::default()
    }
}

fn no_progress() -> Arc<NoProgress> {
    Arc::new(NoProgress)
}

#[test]
fn a_generated_key_is_private_and_never_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let mode = std::fs::metadata(&f.repo.password_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = std::fs::read_to_string(&f.repo.password_file).unwrap();
    f.engine.ensure(&f.repo, true).unwrap();
    assert_eq!(
        std::fs::read_to_string(&f.repo.password_file).unwrap(),
        key,
        "ensure is idempotent"
    );
    // A repository whose key went missing is never given a new key.
    std::fs::remove_file(&f.repo.password_file).unwrap();
    let e = f.engine.ensure(&f.repo, true).unwrap_err();
    assert!(e.to_string().contains("key file"), "{e}");
    assert!(!f.repo.password_file.exists());
}

#[test]
fn a_snapshot_is_named_by_its_full_id_never_by_a_prefix() {
    let f = fixture();
    let src = f.root.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    let snap = f
        .engine
        .backup_dir(&f.repo, &src, &[], &tags("i"), no_progress())
        .unwrap();
    for id in ["", " ", &snap.id[..8]] {
        let dest = f.root.join("dest");
        let e = f
            .engine
            .restore_dir(&f.repo, id, &dest, no_progress())
            .unwrap_err();
        assert!(matches!(e, EngineError::NoSnapshot { .. }), "{id:?}: {e}");
        assert!(!dest.join("f").exists(), "{id:?} restored something");
    }
    let ids = f
        .engine
        .repository_id(&f.repo)
        .unwrap()
        .expect("a repository");
    assert_eq!(ids.len(), 64);
    assert_eq!(
        f.engine
            .repository_id(&Repo {
                path: f.root.join("nothing-here"),
                password_file: f.repo.password_file.clone(),
                remote: None,
            })
            .unwrap(),
        None
    );
    assert!(!f.root.join("nothing-here").exists(), "nothing created");
}

#[test]
fn calls_from_an_async_task_work() {
    let f = fixture();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listed = rt.block_on(async { f.engine.list(&f.repo) });
    assert!(listed.unwrap().is_empty());
}

#[test]
fn an_unchanged_re_backup_stores_almost_nothing() {
    // A handle reused across operations would store everything again; each operation opens
    // its own.
    let f = fixture();
    let src = f.root.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big.bin"), random_bytes(2 << 20)).unwrap();
    let first = f
        .engine
        .backup_dir(&f.repo, &src, &[], &tags("i"), no_progress())
        .unwrap();
    let second = f
        .engine
        .backup_dir(&f.repo, &src, &[], &tags("i"), no_progress())
        .unwrap();
    assert!(first.bytes_added > 2 << 20, "{first:?}");
    assert!(
        second.bytes_added < 16 << 10,
        "second backup added {} bytes",
        second.bytes_added
    );
    assert_eq!(f.engine.list(&f.repo).unwrap().len(), 2);
}

#[test]
fn operations_on_one_repository_run_one_at_a_time() {
    let f = fixture();
    let src = f.root.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    let engine = Arc::new(f.engine);
    let lock = engine.repository_lock(&f.repo);
    let held = lock.lock().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (e2, repo, src2) = (engine.clone(), f.repo.clone(), src.clone());
    let t = std::thread::spawn(move || {
        let r = e2.backup_dir(&repo, &src2, &[], &tags("i"), Arc::new(NoProgress));
        tx.send(r.is_ok()).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "a backup ran while another operation held the repository"
    );
    drop(held);
    assert!(
        rx.recv_timeout(Duration::from_secs(60)).unwrap(),
        "the backup ran once the repository was free"
    );
    t.join().unwrap();
}

#[test]
fn a_panic_inside_restore_is_a_failed_operation() {
    let f = fixture();
    let src = f.root.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big.bin"), random_bytes(3 << 20)).unwrap();
    let snap = f
        .engine
        .backup_dir(&f.repo, &src, &[], &tags("i"), no_progress())
        .unwrap();
    // Remove the largest pack (file data; the tree packs stay readable): restore's reader
    // threads unwrap the failed read and panic.
    let mut packs: Vec<(u64, PathBuf)> = walk_files(&f.repo.path.join("data"))
        .into_iter()
        .map(|p| (std::fs::metadata(&p).unwrap().len(), p))
        .collect();
    packs.sort();
    std::fs::remove_file(&packs.last().unwrap().1).unwrap();
    let dest = f.root.join("restored");
    let result = f
        .engine
        .restore_dir(&f.repo, &snap.id, &dest, no_progress());
    match result {
        Err(EngineError::Panicked { op: "restore", .. }) => {}
        other => panic!("expected the panic to come back as an error, got {other:?}"),
    }
    // The process is alive and the engine usable.
    assert_eq!(f.engine.list(&f.repo).unwrap().len(), 1);
}

#[test]
fn a_backup_is_reported_only_after_the_repository_folders_are_synced() {
    // rustic renames the new snapshot file into `snapshots/` without syncing the folder; the
    // engine syncs it. Observed with strace on a real `backplan apply`.
    assert!(
        Command::new("strace").arg("-V").output().is_ok(),
        "strace is needed for this test (Debian package `strace`)"
    );
    let tmp = crate::helpers::quickstart_copy();
    let out = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=fsync,rename,renameat,renameat2",
            "-o",
        ])
        .arg(tmp.path().join("trace"))
        .arg(env!("CARGO_BIN_EXE_backplan"))
        .args(["apply", "-c", "backplan.toml", "--auto-approve"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace = std::fs::read_to_string(tmp.path().join("trace")).unwrap();
    let lines: Vec<&str> = trace.lines().collect();
    let renamed = lines
        .iter()
        .rposition(|l| l.contains("rename") && l.contains("/repository/snapshots/"))
        .expect("a snapshot file was renamed into place");
    let synced = lines[renamed..].iter().any(|l| {
        l.contains("fsync(")
            && l.trim_end().ends_with("= 0")
            && l.contains("/repository/snapshots>")
    });
    assert!(
        synced,
        "no fsync of repository/snapshots after the snapshot's rename"
    );
}

#[test]
fn restore_gives_back_an_identical_tree() {
    let f = fixture();
    let src = f.root.join("src");
    std::fs::create_dir(&src).unwrap();
    rich_tree(&src);
    let snap = f
        .engine
        .backup_dir(&f.repo, &src, &[], &tags("i"), no_progress())
        .unwrap();
    let dest = f.root.join("restored");
    f.engine
        .restore_dir(&f.repo, &snap.id, &dest, no_progress())
        .unwrap();
    assert_same_tree(&src, &dest);
    // The 8 MiB sparse file with 4 KiB of data comes back sparse.
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(dest.join("sparse.img")).unwrap().blocks() * 512;
    assert!(
        allocated < 1 << 20,
        "the sparse file came back with {allocated} bytes allocated"
    );
    // Restoring into a folder that is not empty is refused (rustic fails on hard links and
    // special files there).
    let e = f
        .engine
        .restore_dir(&f.repo, &snap.id, &dest, no_progress())
        .unwrap_err();
    assert!(
        matches!(e, EngineError::DestinationNotEmpty { .. }),
        "{e:?}"
    );
}

/// The restore sets metadata on a thread pool, a batch of entries at a time, and writes each
/// blob with one open (vendor/rustic_core/BACKPLAN.md): more entries than one batch, in
/// nested folders whose own mtimes and modes must be set after everything inside them
/// (symlinks and hard links made there change them), read-only files and folders, files of
/// several blobs, empty files. Every entry must come back as it was, hard links as links.
#[test]
fn a_restore_of_many_nested_entries_gives_back_every_entrys_metadata() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let f = fixture();
    let src = f.root.join("src");
    let set_mtime = |path: &Path, secs: u64| {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(4321);
        std::fs::File::open(path)
            .unwrap()
            .set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
            .unwrap();
    };
    let mut folders = Vec::new();
    let mut n = 0u64;
    for a in 0..4 {
        for b in 0..4 {
            let dir = src.join(format!("d{a}")).join(format!("e{b}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..80 {
                n += 1;
                let file = dir.join(format!("f{i}.txt"));
                std::fs::write(&file, format!("{a}/{b}/{i}\n").repeat(i)).unwrap();
                if i % 7 == 0 {
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400))
                        .unwrap();
                }
                set_mtime(&file, 1_500_000_000 + n);
            }
            std::os::unix::fs::symlink("f1.txt", dir.join("link")).unwrap();
            std::fs::hard_link(dir.join("f2.txt"), dir.join("hard")).unwrap();
            folders.push(dir);
        }
        folders.push(src.join(format!("d{a}")));
    }
    // Files of several blobs (the chunker cuts random data at ~1 MiB on average).
    std::fs::write(src.join("d0/big.bin"), random_bytes(5 << 20)).unwrap();
    std::fs::write(src.join("d1/e1/big.bin"), random_bytes(3 << 20)).unwrap();
    std::fs::create_dir(src.join("d2/empty")).unwrap();
    folders.push(src.join("d2/empty"));
    // Folders last (deepest first: the list is in that order), one read-only.
    for (i, dir) in folders.iter().enumerate() {
        set_mtime(dir, 1_600_000_000 + i as u64);
    }
    std::fs::set_permissions(src.join("d3/e3"), std::fs::Permissions::from_mode(0o555)).unwrap();
    assert!(
        n as usize > 1024,
        "more entries than one metadata batch (1024)"
    );
    let snap = f
        .engine
        .backup_dir(&f.repo, &src, &[], &tags("i"), no_progress())
        .unwrap();
    let dest = f.root.join("restored");
    f.engine
        .restore_dir(&f.repo, &snap.id, &dest, no_progress())
        .unwrap();
    assert_same_tree(&src, &dest);
    for dir in &folders {
        let rel = dir.strip_prefix(&src).unwrap();
        if rel.starts_with("d2/empty") || rel.components().count() < 2 {
            continue;
        }
        let a = std::fs::metadata(dest.join(rel).join("f2.txt")).unwrap();
        let b = std::fs::metadata(dest.join(rel).join("hard")).unwrap();
        assert_eq!(
            a.ino(),
            b.ino(),
            "{}: hard link restored as a link",
            rel.display()
        );
        assert_eq!(a.nlink(), 2);
    }
}

#[test]
fn restic_reads_what_backplan_writes() {
    let f = fixture();
    let src = f.root.join("src");
    std::fs::create_dir(&src).unwrap();
    rich_tree(&src);
    let t = tags("contoso");
    let snap = f
        .engine
        .backup_dir(&f.repo, &src, &[], &t, no_progress())
        .unwrap();
    let restic = |args: &[&str]| restic_on(&f.repo, args, None);
    let listed: serde_json::Value =
        serde_json::from_str(&restic(&["snapshots", "--json"])).unwrap();
    let tags_seen: Vec<&str> = listed[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let backup_tag = format!("backup={}", t.backup);
    for expected in [
        "backplan",
        "instance=contoso",
        "kind=on-demand",
        backup_tag.as_str(),
    ] {
        assert!(
            tags_seen.contains(&expected),
            "restic sees tags {tags_seen:?}"
        );
    }
    assert_eq!(listed[0]["id"].as_str().unwrap(), snap.id);
    restic(&["check", "--read-data"]);
    let target = f.root.join("by-restic");
    restic(&["restore", &snap.id, "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &target);
}

/// Data blobs are compressed per blob (vendor/rustic_core, blob_codec.rs): bytes that do not
/// compress are stored uncompressed (no `uncompressed_length` in the index, which restic's
/// repository format version 2 allows), bytes that compress less than 2:1 at zstd level 1 and
/// text at the repository's level. restic finds both kinds of entries in the index, checks
/// every byte and restores the tree identical; backplan's own restore too.
#[test]
fn blobs_that_do_not_compress_are_stored_uncompressed_and_restic_reads_every_kind() {
    let f = fixture();
    let src = f.root.join("src");
    std::fs::create_dir(&src).unwrap();
    // Several chunks each (chunks are 512 KiB to 8 MiB): random, hex of random, text.
    let random = random_bytes(3 << 20);
    std::fs::write(src.join("random.bin"), &random).unwrap();
    let hex: String = random[..3 << 19]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(src.join("hex.txt"), hex).unwrap();
    let text: String = (0..90_000)
        .map(|i| format!("row {i} status shipped on 2024-01-{:02}\n", i % 28 + 1))
        .collect();
    std::fs::write(src.join("rows.txt"), text).unwrap();
    // Too short for zstd's frame to be smaller: stored as it is too.
    let small = "a file of one blob\n";
    std::fs::write(src.join("small.txt"), small).unwrap();
    let snap = f
        .engine
        .backup_dir(&f.repo, &src, &[], &tags("mixed"), no_progress())
        .unwrap();
    let restic = |args: &[&str]| restic_on(&f.repo, args, None);
    let (mut plain, mut compressed) = (0u64, 0u64);
    for index in restic(&["list", "index"]).lines() {
        let index: serde_json::Value =
            serde_json::from_str(&restic(&["cat", "index", index])).unwrap();
        for pack in index["packs"].as_array().unwrap() {
            for blob in pack["blobs"].as_array().unwrap() {
                if blob["type"] != "data" {
                    continue;
                }
                let length = blob["length"].as_u64().unwrap();
                match blob["uncompressed_length"].as_u64() {
                    Some(u) => {
                        assert!(u > length, "a compressed blob is smaller: {blob}");
                        compressed += u;
                    }
                    None => plain += length - 32, // nonce and MAC
                }
            }
        }
    }
    assert_eq!(
        plain,
        (3 << 20) + small.len() as u64,
        "the random file and the short one are stored uncompressed, whole"
    );
    assert!(
        compressed >= (3 << 20) + 2_000_000,
        "hex and text are compressed: {compressed} bytes"
    );
    restic(&["check", "--read-data"]);
    let by_restic = f.root.join("by-restic");
    restic(&["restore", &snap.id, "--target", by_restic.to_str().unwrap()]);
    assert_same_tree(&src, &by_restic);
    let by_backplan = f.root.join("by-backplan");
    f.engine
        .restore_dir(&f.repo, &snap.id, &by_backplan, no_progress())
        .unwrap();
    assert_same_tree(&src, &by_backplan);
}

/// The chunker's tables are computed once per polynomial (vendor/rustic_cdc): the chunks must
/// still be exactly restic's. restic, forced to read every file again (`--force`, no parent),
/// cuts the same files of the same repository (same polynomial) and must find every data blob
/// already stored: one differing boundary would add blobs.
#[test]
fn restic_cuts_the_same_chunks_as_backplan() {
    let f = fixture();
    let src = f.root.join("src");
    std::fs::create_dir(&src).unwrap();
    // Several files, so that later ones use tables computed for an earlier one;
    // incompressible pseudo-random bytes (xorshift), about 1 MiB per chunk on average.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (i, size) in [6usize << 20, 3 << 20, 5 << 20].into_iter().enumerate() {
        let data: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        std::fs::write(src.join(format!("f{i}.bin")), data).unwrap();
    }
    f.engine
        .backup_dir(&f.repo, &src, &[], &tags("contoso"), no_progress())
        .unwrap();
    let restic = |args: &[&str]| restic_on(&f.repo, args, None);
    let data_blobs = || -> std::collections::BTreeSet<String> {
        restic(&["list", "blobs"])
            .lines()
            .filter_map(|l| l.strip_prefix("data ").map(str::to_owned))
            .collect()
    };
    let before = data_blobs();
    // How many depends on the repository's chunker polynomial, random per repository (about
    // 1.5 MiB a chunk on average over 14 MiB): a few whatever it is.
    assert!(before.len() >= 4, "{} data blobs", before.len());
    restic(&["backup", "--force", src.to_str().unwrap()]);
    assert_eq!(
        data_blobs(),
        before,
        "restic's chunks of the same files differ from backplan's"
    );
}

/// The chunker's inner loop slides the hash over buffered slices (vendor/rustic_core,
/// `chunker/rabin.rs`): a stream of seeded random bytes then dump-like rows (each chunk cut
/// inside the read buffer, many at the minimum or maximum size), stored by backplan, is
/// chunked by restic from its standard input into the same repository: every data blob must
/// already be there.
#[test]
fn restic_cuts_the_same_chunks_as_backplan_from_a_stream() {
    let f = fixture();
    let mut data = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while data.len() < 7 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.push((x >> 32) as u8);
    }
    let mut i = 0u64;
    while data.len() < 16 << 20 {
        i += 1;
        data.extend_from_slice(format!("{i}\t{}\t0\t{:84}\n", i / 1000 + 1, "").as_bytes());
    }
    // Zeros (the hash is 0: cuts at the minimum size), then a short pattern repeated (its
    // few hash values are not cut points: cuts at the maximum size).
    data.extend(std::iter::repeat_n(0u8, 2 << 20));
    while data.len() < 36 << 20 {
        data.extend_from_slice(b"backplan ");
    }
    let file = f.root.join("stream.bin");
    std::fs::write(&file, &data).unwrap();
    let script = format!("cat '{}'", file.display());
    let info = f
        .engine
        .backup_stream(
            &f.repo,
            &producer(&script, "db.dump"),
            &tags("db"),
            no_progress(),
        )
        .unwrap();
    assert_eq!(info.bytes_read, data.len() as u64);
    let restic = |args: &[&str], stdin: Option<&Path>| restic_on(&f.repo, args, stdin);
    let data_blobs = || -> std::collections::BTreeSet<String> {
        restic(&["list", "blobs"], None)
            .lines()
            .filter_map(|l| l.strip_prefix("data ").map(str::to_owned))
            .collect()
    };
    let before = data_blobs();
    // How many depends on the repository's chunker polynomial, random per repository (10 to
    // 17 seen over 36 MiB): a few whatever it is.
    assert!(before.len() >= 6, "{} data blobs", before.len());
    restic(
        &[
            "backup",
            "--force",
            "--stdin",
            "--stdin-filename",
            "db.dump",
        ],
        Some(&file),
    );
    assert_eq!(
        data_blobs(),
        before,
        "restic's chunks of the same stream differ from backplan's"
    );
    assert_eq!(restored(&f, &info.id, "db.dump"), data);
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

// --- Byte streams (a producer process's standard output as one file) ---------------------

fn producer(script: &str, name: &str) -> backplan::engine::StreamSource {
    backplan::engine::StreamSource {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![("STREAM_TEST".into(), "1".into())],
        name: name.into(),
    }
}

fn restored(f: &Fixture, snapshot: &str, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let n = f
        .engine
        .restore_stream(&f.repo, snapshot, name, &mut out)
        .unwrap();
    assert_eq!(n, out.len() as u64);
    out
}

#[test]
fn a_trickling_producer_is_stored_whole_and_read_back_by_restic() {
    let f = fixture();
    // 3,000 small writes, as a dump tool on a slow server produces them.
    let script = "i=0; while [ $i -lt 3000 ]; do printf 'row %05d of a slow producer\\n' $i; i=$((i+1)); done";
    let expected: String = (0..3000)
        .map(|i| format!("row {i:05} of a slow producer\n"))
        .collect();
    let info = f
        .engine
        .backup_stream(
            &f.repo,
            &producer(script, "orders.dump"),
            &tags("orders"),
            no_progress(),
        )
        .unwrap();
    assert_eq!(info.bytes_read, expected.len() as u64);
    assert_eq!(restored(&f, &info.id, "orders.dump"), expected.as_bytes());
    // The stock restic reads the same bytes.
    let out = Command::new("restic")
        .arg("-r")
        .arg(&f.repo.path)
        .arg("--password-file")
        .arg(&f.repo.password_file)
        .args(["--no-cache", "dump", &info.id, "/orders.dump"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, expected.as_bytes());
}

#[test]
fn a_failing_producer_leaves_no_snapshot_and_its_message() {
    let f = fixture();
    let cases = [
        (
            "printf 'half a dump'; echo 'FATAL: password authentication failed for user \"backplan\"' >&2; exit 3",
            "password authentication failed",
        ),
        ("printf 'half a dump'; kill -9 $$", "signal: 9"),
    ];
    for (script, expected) in cases {
        let e = f
            .engine
            .backup_stream(
                &f.repo,
                &producer(script, "x.dump"),
                &tags("orders"),
                no_progress(),
            )
            .unwrap_err();
        assert!(matches!(e, EngineError::Producer { .. }), "{e:?}");
        assert!(e.to_string().contains(expected), "{e}");
        assert!(e.to_string().contains("no backup was kept"), "{e}");
    }
    let missing = backplan::engine::StreamSource {
        argv: vec!["/nonexistent/pg_dump".into()],
        env: vec![],
        name: "x.dump".into(),
    };
    let e = f
        .engine
        .backup_stream(&f.repo, &missing, &tags("orders"), no_progress())
        .unwrap_err();
    assert!(e.to_string().contains("cannot start it"), "{e}");
    assert!(
        f.engine.list(&f.repo).unwrap().is_empty(),
        "no snapshot kept"
    );
}

/// A stream written by code of this process, `write` called with the writer.
fn written(
    name: &str,
    write: impl Fn(&mut dyn std::io::Write) -> Result<(), String> + Send + Sync + 'static,
) -> backplan::engine::WrittenStream {
    backplan::engine::WrittenStream {
        name: name.into(),
        producer: "the test's writer".into(),
        write: Arc::new(write),
    }
}

/// Bytes in writes of every size (one byte, odd sizes, several MiB at once) are stored whole
/// and in order; the stock restic reads them back.
#[test]
fn a_stream_written_in_process_is_stored_whole_and_read_back_by_restic() {
    let f = fixture();
    let data: Vec<u8> = (0..9_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let expected = data.clone();
    let source = written("pages.bin", move |out| {
        let mut at = 0;
        let mut size = 1;
        while at < data.len() {
            let end = (at + size).min(data.len());
            out.write_all(&data[at..end]).map_err(|e| e.to_string())?;
            at = end;
            size = (size * 7 + 3) % 5_000_000;
        }
        Ok(())
    });
    let info = f
        .engine
        .backup_written(&f.repo, &source, &tags("pages"), no_progress())
        .unwrap();
    assert_eq!(info.bytes_read, expected.len() as u64);
    assert!(restored(&f, &info.id, "pages.bin") == expected);
    let into = f.root.join("restored");
    restic_on(
        &f.repo,
        &["restore", &info.id, "--target", into.to_str().unwrap()],
        None,
    );
    assert!(std::fs::read(into.join("pages.bin")).unwrap() == expected);
}

/// A writer that fails after several MiB, or panics, fails the backup with its reason, and
/// no snapshot is kept.
#[test]
fn a_stream_writer_failing_half_way_leaves_no_snapshot_and_its_reason() {
    let f = fixture();
    let failing = written("pages.bin", |out| {
        out.write_all(&vec![1u8; 5 << 20])
            .map_err(|e| e.to_string())?;
        Err("reading page 1281 of 4000: disk I/O error".into())
    });
    let e = f
        .engine
        .backup_written(&f.repo, &failing, &tags("pages"), no_progress())
        .unwrap_err();
    assert!(matches!(e, EngineError::Producer { .. }), "{e:?}");
    let shown = e.to_string();
    assert!(shown.contains("the test's writer failed"), "{shown}");
    assert!(
        shown.contains("page 1281 of 4000: disk I/O error"),
        "{shown}"
    );
    assert!(shown.contains("no backup was kept"), "{shown}");
    let panicking = written("pages.bin", |out| {
        out.write_all(&vec![2u8; 3 << 20])
            .map_err(|e| e.to_string())?;
        panic!("a bug in the writer")
    });
    let e = f
        .engine
        .backup_written(&f.repo, &panicking, &tags("pages"), no_progress())
        .unwrap_err();
    assert!(e.to_string().contains("a bug in the writer"), "{e}");
    assert!(
        f.engine.list(&f.repo).unwrap().is_empty(),
        "no snapshot kept"
    );
    assert_eq!(
        restic_on(&f.repo, &["snapshots", "--json"], None).trim(),
        "[]"
    );
    // The same writer's stream is read whole the next time, with no parent.
    let ok = f
        .engine
        .backup_written(
            &f.repo,
            &written("pages.bin", |out| {
                out.write_all(b"whole").map_err(|e| e.to_string())
            }),
            &tags("pages"),
            no_progress(),
        )
        .unwrap();
    assert_eq!(restored(&f, &ok.id, "pages.bin"), b"whole");
}

#[test]
fn a_stream_never_takes_its_content_from_a_parent() {
    let f = fixture();
    let first = f
        .engine
        .backup_stream(
            &f.repo,
            &producer("printf 'monday'", "db.dump"),
            &tags("db"),
            no_progress(),
        )
        .unwrap();
    // Same instance, same name: with a parent, rustic would see an "unchanged" file (a stream
    // has no size or time) and keep Monday's bytes without reading Tuesday's.
    let second = f
        .engine
        .backup_stream(
            &f.repo,
            &producer("printf 'tuesday'", "db.dump"),
            &tags("db"),
            no_progress(),
        )
        .unwrap();
    assert_eq!(restored(&f, &first.id, "db.dump"), b"monday");
    assert_eq!(restored(&f, &second.id, "db.dump"), b"tuesday");
    let e = f
        .engine
        .restore_stream(&f.repo, "", "db.dump", &mut Vec::new())
        .unwrap_err();
    assert!(matches!(e, EngineError::NoSnapshot { .. }), "{e:?}");
}
