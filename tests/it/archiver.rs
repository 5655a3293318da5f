//! The archiver of the patched rustic_core (vendor/rustic_core/src/archiver/in_order.rs): a
//! repeat backup reads only new and changed files on worker threads and passes everything
//! else straight through, in order. What it must keep: the stored trees are exactly those of a
//! backup that reads every file, restic reads and checks them, and a file that grows while it
//! is read is stored as a consistent prefix.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use backplan::engine::{Engine, NoProgress, Repo, SnapshotTags};
use uuid::Uuid;

use crate::helpers::restic_on;
use crate::trees::*;

fn tags(instance: &str, n: u128) -> SnapshotTags {
    SnapshotTags {
        instance: instance.into(),
        backup: Uuid::from_u128(n),
        kind: "on-demand".into(),
        ..Default::default()
    }
}

/// The id of a snapshot's root tree, as restic reads it.
fn tree_of(repo: &Repo, snapshot: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&restic_on(repo, &["cat", "snapshot", snapshot], None)).unwrap();
    v["tree"].as_str().unwrap().to_string()
}

/// Many small files in several folders (more entries than the archiver keeps in flight), with
/// fixed mtimes so that two walks of the same tree see the same metadata.
fn many_files(root: &Path) {
    for d in 0..6 {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..120 {
            let body = format!("folder {d} file {i}\n").repeat(1 + i % 50);
            std::fs::write(dir.join(format!("f{i:03}.txt")), body).unwrap();
        }
    }
    std::fs::write(root.join("big.bin"), random_bytes(3 << 20)).unwrap();
}

fn touch_all(root: &Path) {
    // One mtime for every file, so that the tree does not depend on when it was written.
    let status = Command::new("find")
        .arg(root)
        .args([
            "-exec",
            "touch",
            "-h",
            "-d",
            "2024-01-02 03:04:05",
            "{}",
            "+",
        ])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_repeat_backup_of_mixed_changes_restores_identical_and_stores_the_same_trees() {
    let f = crate::engine::fixture();
    let (root, repo, engine) = (f.root.as_path(), &f.repo, &f.engine);
    let src = root.join("src");
    std::fs::create_dir(&src).unwrap();
    rich_tree(&src);
    many_files(&src);
    let progress = || Arc::new(NoProgress);
    let first = engine
        .backup_dir(repo, &src, &[], &tags("mixed", 1), progress())
        .unwrap();

    // Unchanged, changed (same size, new content; and a new size), new and deleted files,
    // interleaved within the folders.
    for d in 0..6 {
        let dir = src.join(format!("d{d}"));
        for i in (d..120).step_by(7) {
            let p = dir.join(format!("f{i:03}.txt"));
            let old = std::fs::read(&p).unwrap();
            let mut new = old.clone();
            new[0] = b'F';
            std::fs::write(&p, if i % 2 == 0 { new } else { [old, new].concat() }).unwrap();
        }
        for i in (d + 3..120).step_by(11) {
            let _ = std::fs::remove_file(dir.join(format!("f{i:03}.txt")));
        }
        for i in 0..5 {
            std::fs::write(dir.join(format!("new{i}.txt")), format!("new {d} {i}\n")).unwrap();
        }
    }
    std::fs::create_dir(src.join("new-folder")).unwrap();
    std::fs::write(src.join("new-folder/n.bin"), random_bytes(200_000)).unwrap();
    let mut big = std::fs::read(src.join("big.bin")).unwrap();
    big[1 << 20] ^= 0xff;
    std::fs::write(src.join("big.bin"), big).unwrap();
    touch_all(&src);
    let before = snapshot(&src);

    // With a parent: unchanged entries pass through, the others are read by the pool.
    let repeat = engine
        .backup_dir(repo, &src, &[], &tags("mixed", 2), progress())
        .unwrap();
    assert!(repeat.files > 600, "{repeat:?}");
    // Without a parent (another instance): every file is read by the pool.
    let fresh = engine
        .backup_dir(repo, &src, &[], &tags("other", 3), progress())
        .unwrap();
    assert_eq!(before, snapshot(&src), "the source changed during the test");
    assert_ne!(tree_of(repo, &first.id), tree_of(repo, &repeat.id));
    assert_eq!(
        tree_of(repo, &repeat.id),
        tree_of(repo, &fresh.id),
        "a repeat backup stores other trees than a backup reading every file"
    );

    restic_on(repo, &["check", "--read-data"], None);
    let ours = root.join("restored");
    engine
        .restore_dir(repo, &repeat.id, &ours, progress())
        .unwrap();
    assert_same_tree(&src, &ours);
    let theirs = root.join("by-restic");
    restic_on(
        repo,
        &["restore", &repeat.id, "--target", theirs.to_str().unwrap()],
        None,
    );
    assert_same_tree(&src, &theirs);
}

#[test]
fn a_file_growing_while_it_is_read_is_stored_as_a_prefix_and_the_rest_is_intact() {
    let f = crate::engine::fixture();
    let (root, repo, engine) = (f.root.as_path(), &f.repo, &f.engine);
    let src = root.join("src");
    std::fs::create_dir(&src).unwrap();
    many_files(&src);
    let growing = src.join("d3/growing.log");
    std::fs::write(&growing, random_bytes(16 << 20)).unwrap();
    let first = engine
        .backup_dir(repo, &src, &[], &tags("grow", 1), Arc::new(NoProgress))
        .unwrap();

    // The repeat backup reads the growing file (its size and mtime change) while a thread
    // keeps appending to it; the files around it are unchanged.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let growing = growing.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&growing)
                .unwrap();
            let block = random_bytes(64 << 10);
            let mut n = 0;
            // 64 KiB every 2 ms (at most 128 MiB): slower than the backup reads
            while !stop.load(Ordering::Relaxed) && n < 2048 {
                f.write_all(&block).unwrap();
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    let during = engine.backup_dir(repo, &src, &[], &tags("grow", 2), Arc::new(NoProgress));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let during = during.unwrap();
    assert_ne!(first.id, during.id);
    restic_on(repo, &["check", "--read-data"], None);

    let dest = root.join("restored");
    engine
        .restore_dir(repo, &during.id, &dest, Arc::new(NoProgress))
        .unwrap();
    let now = std::fs::read(&growing).unwrap();
    let stored = std::fs::read(dest.join("d3/growing.log")).unwrap();
    assert!(stored.len() >= 16 << 20, "stored {} bytes", stored.len());
    assert!(
        stored[..] == now[..stored.len()],
        "the stored file ({} bytes) is not a prefix of the file ({} bytes)",
        stored.len(),
        now.len()
    );
    // Everything else came back as it is.
    std::fs::remove_file(&growing).unwrap();
    std::fs::remove_file(dest.join("d3/growing.log")).unwrap();
    let (a, b) = (snapshot(&src), snapshot(&dest));
    let names: Vec<_> = a.keys().collect();
    assert_eq!(names, b.keys().collect::<Vec<_>>());
    for (name, e) in &a {
        // the folder holding the growing file had its mtime changed by the removal
        if name.to_str() != Some("d3") {
            assert_eq!(e, &b[name], "entry {name:?} differs");
        }
    }
}
