//! Building test trees with every kind of entry, and comparing two trees entry by entry.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A tree with regular files of several modes and mtimes, a symlink, a dangling symlink, an
/// empty folder, non-ASCII names, a sparse file and (as root) files owned by someone else.
pub fn rich_tree(root: &Path) {
    let p = |s: &str| root.join(s);
    std::fs::create_dir_all(p("sub/deeper")).unwrap();
    std::fs::create_dir_all(p("empty-folder")).unwrap();
    std::fs::write(p("a.txt"), "hello\n").unwrap();
    std::fs::write(p("sub/x.sql"), "insert into t values (1);\n".repeat(2000)).unwrap();
    std::fs::write(p("sub/deeper/random.bin"), random_bytes(300_000)).unwrap();
    std::fs::write(p("sub/ünïcödé name ✓.txt"), "non-ASCII").unwrap();
    std::fs::write(p("empty-file"), "").unwrap();
    std::fs::set_permissions(p("sub/x.sql"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(p("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(p("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a.txt", p("link-to-a")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", p("dangling-link")).unwrap();
    // Sparse: 8 MiB with 4 KiB of data in the middle.
    let f = std::fs::File::create(p("sparse.img")).unwrap();
    f.set_len(8 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_at(&[7u8; 4096], 4 << 20).unwrap();
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::lchown(p("a.txt"), Some(1234), Some(2345)).unwrap();
        std::os::unix::fs::lchown(p("link-to-a"), Some(1234), Some(2345)).unwrap();
    }
    // Fixed mtimes, files and folders (folders last: writing inside changes them).
    for (path, secs) in [
        ("a.txt", 1_000_000_000),
        ("sub/x.sql", 1_100_000_000),
        ("sub/deeper", 1_200_000_000),
        ("empty-folder", 1_300_000_000),
    ] {
        let t = filetime(secs);
        set_mtime(&p(path), t);
    }
}

fn filetime(secs: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: secs,
        tv_nsec: 123_456_789,
    }
}

fn set_mtime(path: &Path, t: libc::timespec) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        t,
    ];
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    // xorshift: incompressible, deterministic.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ n as u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// One entry as compared: type, mode, owner, size, mtime (ns), symlink target, content.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: Option<i128>,
    pub target: Option<PathBuf>,
    pub content: Option<Vec<u8>>,
}

/// Every entry under `root` (not `root` itself), by relative path.
pub fn snapshot(root: &Path) -> BTreeMap<OsString, Entry> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<OsString, Entry>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let path = e.path();
        let m = std::fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().as_os_str().to_owned();
        let kind = if m.is_dir() {
            "dir"
        } else if m.file_type().is_symlink() {
            "symlink"
        } else {
            "file"
        };
        out.insert(
            rel,
            Entry {
                kind,
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                size: if m.is_dir() { 0 } else { m.size() },
                // Folder mtimes are compared too, except that of the root.
                mtime_ns: Some(m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128),
                target: (kind == "symlink").then(|| std::fs::read_link(&path).unwrap()),
                content: (kind == "file").then(|| std::fs::read(&path).unwrap()),
            },
        );
        if m.is_dir() {
            walk(root, &path, out);
        }
    }
}

/// Asserts two trees are identical, naming the first differing entry.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = snapshot(expected);
    let b = snapshot(actual);
    let names_a: Vec<_> = a.keys().collect();
    let names_b: Vec<_> = b.keys().collect();
    assert_eq!(names_a, names_b, "the trees hold different entries");
    for (name, ea) in &a {
        let eb = &b[name];
        assert_eq!(ea, eb, "entry {name:?} differs");
    }
}
