//! The tests every instance kind must pass: the guarantees of `backplan::kinds` (`Kind` and
//! `Target`), written once, generic over the kind. Each kind has a fixture ([`KindFixture`]:
//! how to make, fill, read and change one of its stores) and one `kind_contract!` line
//! (under "The kinds" below), which instantiates every test for it as `kinds::<kind>::<test>`.
//!
//! Restores go through the real engine and a repository in a temporary folder, exactly in
//! the order the executor uses: `open_target`, `stage`, the engine's restore into what `stage`
//! returned, `prepare`, then `commit` and `finish` (or `discard`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backplan::config::{Source, SourceKind};
use backplan::engine::{Engine, NoProgress, Repo, RusticEngine, SnapshotTags};
use backplan::kinds::{self, BackupSource, Kind, RestoreInto, Target};

use crate::trees;

/// Puts something at a location.
type MakeAt = fn(&Path);

/// What the contract needs to know about one kind.
trait KindFixture {
    /// A store's data as read back, compared with `==`.
    type Data: PartialEq + std::fmt::Debug;
    const KIND: SourceKind;
    /// The source of a store at `at` (nothing is created there).
    fn source(at: &Path) -> Source;
    /// How the kind's messages name the store of `source`.
    fn shown(source: &Source) -> String;
    /// Fills a provisioned, empty store with small sample data.
    fn fill(source: &Source);
    /// The store's data.
    fn read(source: &Source) -> Self::Data;
    /// Changes the data of a filled store, so that a restore has something to undo.
    fn change(source: &Source);
    /// Ways the location `at` can hold something that is not a store of this kind, each with
    /// a name for messages; `at` is in a folder of its own.
    fn not_stores() -> Vec<(&'static str, MakeAt)>;
    /// Replaces the store of `source` by a symbolic link to the store of `other`.
    fn replace_by_link(source: &Source, other: &Source);
    /// The place the store of `source` occupies on this host, as `store_path` must name it.
    fn expected_store_path(source: &Source) -> Option<PathBuf>;
    /// Whether a store is a place on this host's filesystem, so that it can become a
    /// symbolic link and be, hold or be inside a protected path. A database on a server is
    /// not: the tests of those items say they skip them.
    const ON_FILESYSTEM: bool = true;
    /// Whether a store is a folder, so that a store can be inside another store's place.
    const FOLDERS: bool = false;
    /// Whether the stores can be made here (a server the kind needs is reachable). `false`
    /// skips the test loudly; with `CI=true` a missing server must panic instead.
    fn available() -> bool {
        true
    }
    /// Removes what the tests made for stores kept in `dir` outside of it (databases).
    fn clean_up(_dir: &Path) {}
    /// Makes, beside the store named `store` in `dir`, things whose names only look like
    /// the kind's staging places; they must survive `discard_leftovers`.
    fn lookalikes(dir: &Path, _store: &str) {
        for folder in [
            "store.backplan-restore-contract-k1",
            ".store-old.backplan-restore-contract-k1",
            ".stor.backplan-restore-contract-k1",
            "store-copy",
        ] {
            std::fs::create_dir(dir.join(folder)).unwrap();
            std::fs::write(dir.join(folder).join("keep"), folder).unwrap();
        }
        for file in [".store.backplan-restore", ".store.bak", "store~"] {
            std::fs::write(dir.join(file), file).unwrap();
        }
    }
    /// What lies next to the stores kept in `dir` (staging places appear here).
    fn around(dir: &Path) -> BTreeSet<OsString> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }
}

fn kind<F: KindFixture>() -> &'static dyn Kind {
    kinds::of(F::KIND).expect("the kind under test has an implementation")
}

/// A restore key, as the executor gives one to `stage` and the steps after it.
const KEY: &str = "contract-k1";

/// A scratch folder; dropping it removes it and what the fixture made for its stores.
struct Places {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    clean_up: fn(&Path),
}

impl Places {
    fn path(&self) -> &Path {
        self.tmp.path()
    }
}

impl Drop for Places {
    fn drop(&mut self) {
        (self.clean_up)(&self.dir);
    }
}

/// A scratch folder and, inside it, the folder the stores are kept in.
fn places<F: KindFixture>() -> (Places, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stores");
    std::fs::create_dir(&dir).unwrap();
    let places = Places {
        tmp,
        dir: dir.clone(),
        clean_up: F::clean_up,
    };
    (places, dir)
}

/// A real engine and a new repository in `tmp` (beside the stores' folder, not in it).
fn repository(tmp: &Places) -> (RusticEngine, Repo) {
    let repo = Repo {
        path: tmp.path().join("repository"),
        password_file: tmp.path().join("keys/local.key"),
        remote: None,
    };
    let engine = RusticEngine::new();
    engine.ensure(&repo, true).unwrap();
    (engine, repo)
}

/// A provisioned store `name` in `dir`, filled with the sample data.
fn filled<F: KindFixture>(dir: &Path, name: &str) -> Source {
    let source = F::source(&dir.join(name));
    kind::<F>().provision(&source).unwrap();
    F::fill(&source);
    source
}

/// Backs the store up the way its kind says (a tree or a stream); returns the snapshot id.
fn back_up<F: KindFixture>(engine: &RusticEngine, repo: &Repo, source: &Source) -> String {
    let tags = SnapshotTags {
        instance: "contract".into(),
        backup: uuid::Uuid::from_u128(1),
        kind: "on-demand".into(),
        ..Default::default()
    };
    let progress = Arc::new(NoProgress);
    let done = match kind::<F>().backup_source(source, "contract").unwrap() {
        BackupSource::Tree(path) => engine.backup_dir(repo, &path, &[], &tags, progress),
        BackupSource::Stream(s) => engine.backup_stream(repo, &s, &tags, progress),
        BackupSource::Written(w) => engine.backup_written(repo, &w, &tags, progress),
    };
    // As the executor does, whatever the outcome: the kind removes its backup copy.
    kind::<F>().backup_finished(source, "contract");
    done.unwrap().id
}

/// Opens the store as a restore target, stages and has the engine restore `snapshot` into
/// what `stage` returned. Returns the target, ready for `prepare`.
fn staged<F: KindFixture>(
    engine: &RusticEngine,
    repo: &Repo,
    source: &Source,
    snapshot: &str,
) -> Box<dyn Target> {
    let target = kind::<F>().open_target(source).unwrap();
    match target.stage(KEY).unwrap() {
        RestoreInto::Tree(path) => {
            engine
                .restore_dir(repo, snapshot, &path, Arc::new(NoProgress))
                .unwrap();
        }
        RestoreInto::Stream { name, mut sink } => {
            engine
                .restore_stream(repo, snapshot, &name, &mut sink)
                .unwrap();
            sink.flush().unwrap();
        }
    }
    target
}

// --- The contract, generic over the kind ---------------------------------------------------

/// `provision` creates a missing store and adopts an existing one without changing it;
/// again and again. Whatever it refuses it leaves as it was, and whatever it accepts
/// `backup_source` accepts too.
fn provision_creates_or_adopts_and_changes_nothing<F: KindFixture>() {
    let (_tmp, dir) = places::<F>();
    let source = F::source(&dir.join("store"));
    assert_eq!(kind::<F>().provision(&source).unwrap(), "created");
    F::fill(&source);
    let data = F::read(&source);
    for _ in 0..2 {
        assert_eq!(kind::<F>().provision(&source).unwrap(), "adopted");
        assert_eq!(F::read(&source), data, "provisioning changed the store");
    }
    kind::<F>().backup_source(&source, "app").unwrap();

    for (what, make) in F::not_stores() {
        let (_tmp, dir) = places::<F>();
        let at = dir.join("store");
        make(&at);
        let before = trees::snapshot(&dir);
        let source = F::source(&at);
        match kind::<F>().provision(&source) {
            Err(_) => assert_eq!(
                trees::snapshot(&dir),
                before,
                "provisioning {what} changed it while refusing"
            ),
            Ok(outcome) => {
                assert_eq!(outcome, "created", "{what} was adopted as a store");
                kind::<F>()
                    .backup_source(&source, "app")
                    .unwrap_or_else(|e| panic!("provision created a store from {what}: {e}"));
            }
        }
    }
}

/// `backup_source` refuses what is not a store of the kind, naming it, and changes nothing:
/// its `Err` is what keeps the executor from calling the engine.
fn backup_source_refuses_what_is_not_a_store<F: KindFixture>() {
    for (what, make) in F::not_stores() {
        let (_tmp, dir) = places::<F>();
        let at = dir.join("store");
        make(&at);
        let before = trees::snapshot(&dir);
        let source = F::source(&at);
        let e = match kind::<F>().backup_source(&source, "app") {
            Ok(b) => panic!("{what} was accepted for a backup: {b:?}"),
            Err(e) => e,
        };
        assert!(
            e.contains(&F::shown(&source)),
            "the refusal of {what} does not name the store: {e}"
        );
        assert_eq!(trees::snapshot(&dir), before, "checking {what} changed it");
    }
}

/// Backup, change, then the executor's restore sequence through the real engine: the
/// store holds exactly the backed-up data from `commit` on, and nothing is left beside it.
fn a_restore_brings_back_exactly_the_backed_up_data<F: KindFixture>() {
    let (tmp, dir) = places::<F>();
    let (engine, repo) = repository(&tmp);
    let source = filled::<F>(&dir, "store");
    let original = F::read(&source);
    let snapshot = back_up::<F>(&engine, &repo, &source);
    F::change(&source);
    assert_ne!(
        F::read(&source),
        original,
        "the fixture's change changes nothing"
    );
    let around = F::around(&dir);

    let target = staged::<F>(&engine, &repo, &source, &snapshot);
    target.prepare(KEY).unwrap();
    target.commit(KEY).unwrap();
    assert_eq!(F::read(&source), original, "after commit");
    target.finish(KEY).unwrap();
    assert_eq!(F::read(&source), original, "after finish");
    assert_eq!(
        F::around(&dir),
        around,
        "the restore left something beside the store"
    );
    assert_eq!(kind::<F>().discard_leftovers(&source), Vec::<String>::new());
}

/// Until `commit`, the store keeps its data; `discard` removes the staged restore entirely.
fn before_commit_the_store_is_untouched_and_discard_leaves_nothing<F: KindFixture>() {
    let (tmp, dir) = places::<F>();
    let (engine, repo) = repository(&tmp);
    let source = filled::<F>(&dir, "store");
    let snapshot = back_up::<F>(&engine, &repo, &source);
    F::change(&source);
    let changed = F::read(&source);
    let around = F::around(&dir);

    let target = staged::<F>(&engine, &repo, &source, &snapshot);
    assert_eq!(F::read(&source), changed, "the engine wrote into the store");
    assert_ne!(
        F::around(&dir),
        around,
        "stage made no staging place beside the store"
    );
    target.prepare(KEY).unwrap();
    assert_eq!(F::read(&source), changed, "prepare wrote into the store");
    target.discard(KEY);
    assert_eq!(F::read(&source), changed, "discard wrote into the store");
    assert_eq!(F::around(&dir), around, "discard left the staging place");
}

/// A crash between `stage` and `commit` leaves a staging place that `discard_leftovers`
/// finds, reports and removes, and it removes nothing else: not the store, not a sibling with
/// a similar name, not another store's own leftover.
fn a_crash_before_commit_leaves_a_leftover_only_discard_leftovers_removes<F: KindFixture>() {
    let (tmp, dir) = places::<F>();
    let (engine, repo) = repository(&tmp);
    let source = filled::<F>(&dir, "store");
    let snapshot = back_up::<F>(&engine, &repo, &source);
    F::change(&source);
    let changed = F::read(&source);
    // Siblings that only look like staging places of `store`.
    F::lookalikes(&dir, "store");
    // Another store of the kind, with a crashed restore of its own under the same key.
    let other = filled::<F>(&dir, "other");
    let other_snapshot = back_up::<F>(&engine, &repo, &other);
    let before_other_crash = F::around(&dir);
    drop(staged::<F>(&engine, &repo, &other, &other_snapshot));
    let other_leftovers = &F::around(&dir) - &before_other_crash;
    assert!(
        !other_leftovers.is_empty(),
        "the crash left nothing to find"
    );

    let before = F::around(&dir);
    let everything = trees::snapshot(&dir);
    // The crash: staged and restored, then gone without `discard`.
    drop(staged::<F>(&engine, &repo, &source, &snapshot));
    let leftovers = &F::around(&dir) - &before;
    assert!(!leftovers.is_empty(), "the crash left nothing to find");
    assert_eq!(F::read(&source), changed, "the crash changed the store");

    let lines = kind::<F>().discard_leftovers(&source);
    assert_eq!(
        lines.len(),
        leftovers.len(),
        "one line per leftover: {lines:?}"
    );
    for leftover in &leftovers {
        let name = leftover.to_string_lossy();
        assert!(
            lines.iter().any(|l| l.contains(&*name)),
            "no line names {name}: {lines:?}"
        );
    }
    assert_eq!(F::around(&dir), before, "a leftover stayed, or more went");
    assert_eq!(
        trees::snapshot(&dir),
        everything,
        "discard_leftovers changed something that is not a leftover"
    );
    assert_eq!(kind::<F>().discard_leftovers(&source), Vec::<String>::new());

    // The other store's leftover was one: its own store finds it.
    assert_eq!(kind::<F>().discard_leftovers(&other).len(), 1);
    assert_eq!(F::around(&dir), before_other_crash);
}

/// `open_target` refuses a store that has become a symbolic link to another store, naming
/// it, and nothing is written anywhere.
fn open_target_refuses_a_store_that_became_a_link<F: KindFixture>() {
    if !F::ON_FILESYSTEM {
        // Not applicable: the store is not a place on this host, so it cannot become a link.
        eprintln!(
            "SKIPPED for {:?}: its stores are not on this host's filesystem",
            F::KIND
        );
        return;
    }
    let (_tmp, dir) = places::<F>();
    let source = filled::<F>(&dir, "store");
    let other = filled::<F>(&dir, "other");
    let other_data = F::read(&other);
    F::replace_by_link(&source, &other);
    let everything = trees::snapshot(&dir);
    let e = match kind::<F>().open_target(&source) {
        Ok(t) => panic!("{} was opened as a restore target", t.describe()),
        Err(e) => e,
    };
    assert!(e.contains(&F::shown(&source)), "{e}");
    assert!(e.contains("symbolic link"), "{e}");
    assert_eq!(F::read(&other), other_data);
    assert_eq!(trees::snapshot(&dir), everything);
}

/// A store that becomes a symbolic link between `open_target` and `commit` is not replaced,
/// and what the link points to is not touched.
fn commit_refuses_a_store_that_became_a_link_during_the_restore<F: KindFixture>() {
    if !F::ON_FILESYSTEM {
        // Not applicable: the store is not a place on this host, so it cannot become a link.
        eprintln!(
            "SKIPPED for {:?}: its stores are not on this host's filesystem",
            F::KIND
        );
        return;
    }
    let (tmp, dir) = places::<F>();
    let (engine, repo) = repository(&tmp);
    let source = filled::<F>(&dir, "store");
    let snapshot = back_up::<F>(&engine, &repo, &source);
    let other = filled::<F>(&dir, "other");
    F::change(&other);
    let other_data = F::read(&other);
    let around = F::around(&dir);

    let target = staged::<F>(&engine, &repo, &source, &snapshot);
    target.prepare(KEY).unwrap();
    F::replace_by_link(&source, &other);
    let e = target.commit(KEY).unwrap_err();
    assert!(e.contains("symbolic link"), "{e}");
    assert_eq!(
        F::read(&other),
        other_data,
        "the store the link points to changed"
    );
    target.discard(KEY);
    assert_eq!(F::around(&dir), around, "discard left the staging place");
}

/// `check_apart_from` refuses a target that is, is inside or holds a protected path,
/// compared by identity: spelled through a symbolic link to a parent folder, on either side.
/// A target apart from it passes.
fn check_apart_from_refuses_protected_places_by_identity<F: KindFixture>() {
    if !F::ON_FILESYSTEM {
        // Not applicable: protected places are paths on this host and the store is not one
        // (two instances on the same database are refused by validation instead).
        eprintln!(
            "SKIPPED for {:?}: its stores are not on this host's filesystem",
            F::KIND
        );
        return;
    }
    let (_tmp, dir) = places::<F>();
    let srv = dir.join("srv");
    std::fs::create_dir(&srv).unwrap();
    filled::<F>(&srv, "prod");
    let prod_path = srv.join("prod");
    std::os::unix::fs::symlink(&srv, dir.join("alias")).unwrap();
    let what = "the data of instance `prod`";
    let check = |target_at: &str, protected_at: &Path| -> Result<(), String> {
        let source = F::source(&dir.join(target_at));
        kind::<F>().provision(&source).unwrap();
        let target = kind::<F>().open_target(&source).unwrap();
        target.check_apart_from(&[
            ("backplan's state folder".to_string(), dir.join("state")),
            (what.to_string(), protected_at.to_path_buf()),
        ])
    };
    let mut cases = vec![
        ("alias/prod", prod_path.clone()),
        ("srv/prod", dir.join("alias/prod")),
    ];
    // A target inside a protected store exists only when stores are folders; a file or a
    // database holds no other place.
    if F::FOLDERS {
        cases.extend([
            ("srv/prod/sandbox", prod_path.clone()),
            ("alias/prod/sandbox", prod_path.clone()),
            ("srv/prod/sandbox", dir.join("alias/prod")),
        ]);
    }
    for (target_at, protected_at) in cases {
        let e = check(target_at, &protected_at).expect_err(target_at);
        assert!(e.contains(what), "{target_at}: {e}");
        assert!(e.contains(&protected_at.display().to_string()), "{e}");
    }
    // A protected place that does not exist yet, inside the target (a repository to come).
    let e = check("srv/sandbox", &srv.join("sandbox/state/repository")).unwrap_err();
    assert!(e.contains(what), "{e}");
    // One that exists inside it, for stores that are folders.
    let holder = F::source(&srv.join("holder"));
    kind::<F>().provision(&holder).unwrap();
    if srv.join("holder").is_dir() {
        std::fs::create_dir_all(srv.join("holder/state")).unwrap();
        let e = check("alias/holder", &srv.join("holder/state")).unwrap_err();
        assert!(e.contains(what), "{e}");
    }
    // Apart from it, whatever the spelling.
    for (target_at, protected_at) in [
        ("srv/sandbox2", prod_path.clone()),
        ("alias/sandbox2", prod_path.clone()),
        ("srv/sandbox2", dir.join("alias/prod")),
    ] {
        check(target_at, &protected_at).unwrap_or_else(|e| panic!("{target_at}: {e}"));
    }
}

/// `store_path` names the place the store occupies, the one the shared-store check compares:
/// a target is refused when its own `store_path` is protected.
fn store_path_names_the_store<F: KindFixture>() {
    let (_tmp, dir) = places::<F>();
    let source = filled::<F>(&dir, "store");
    let expected = F::expected_store_path(&source);
    assert_eq!(kind::<F>().store_path(&source), expected);
    if let Some(path) = expected {
        let e = kind::<F>()
            .open_target(&source)
            .unwrap()
            .check_apart_from(&[("itself".to_string(), path)])
            .unwrap_err();
        assert!(e.contains("itself"), "{e}");
    }
}

/// Runs one contract item for fixture `F`, unless its stores cannot be made here (a server
/// that is missing outside CI: `available` says so loudly).
fn run<F: KindFixture>(item: fn()) {
    if F::available() {
        item();
    }
}

/// One `#[test]` per contract item for the kind whose fixture is `$fixture`.
macro_rules! kind_contract {
    ($kind:ident: $fixture:ident) => {
        kind_contract!(@tests $kind: $fixture;
            provision_creates_or_adopts_and_changes_nothing,
            backup_source_refuses_what_is_not_a_store,
            a_restore_brings_back_exactly_the_backed_up_data,
            before_commit_the_store_is_untouched_and_discard_leaves_nothing,
            a_crash_before_commit_leaves_a_leftover_only_discard_leftovers_removes,
            open_target_refuses_a_store_that_became_a_link,
            commit_refuses_a_store_that_became_a_link_during_the_restore,
            check_apart_from_refuses_protected_places_by_identity,
            store_path_names_the_store,
        );
    };
    (@tests $kind:ident: $fixture:ident; $($test:ident,)*) => {
        mod $kind {
            $(
                #[test]
                fn $test() {
                    super::run::<super::$fixture>(super::$test::<super::$fixture>);
                }
            )*
        }
    };
}

// --- The kinds ------------------------------------------------------------------------------

kind_contract!(directory: DirectoryStores);
kind_contract!(sqlite: SqliteStores);
kind_contract!(postgres: PostgresStores);

/// Directory stores: a folder with files of several modes, a subfolder, an empty folder, a
/// symbolic link and a non-ASCII name.
struct DirectoryStores;

fn folder(source: &Source) -> &Path {
    match source {
        Source::Directory { path } => path,
        other => panic!("not a directory source: {other:?}"),
    }
}

impl KindFixture for DirectoryStores {
    type Data = BTreeMap<OsString, trees::Entry>;
    const KIND: SourceKind = SourceKind::Directory;

    fn source(at: &Path) -> Source {
        Source::Directory {
            path: at.to_path_buf(),
        }
    }

    fn shown(source: &Source) -> String {
        folder(source).display().to_string()
    }

    fn fill(source: &Source) {
        let p = |s: &str| folder(source).join(s);
        std::fs::create_dir_all(p("sub/deeper")).unwrap();
        std::fs::create_dir(p("empty")).unwrap();
        std::fs::write(p("a.txt"), "hello\n").unwrap();
        std::fs::write(p("sub/deeper/data.bin"), trees::random_bytes(20_000)).unwrap();
        std::fs::write(p("sub/ünïcödé ✓.txt"), "non-ASCII").unwrap();
        std::fs::write(p("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(p("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(p("a.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("a.txt", p("link-to-a")).unwrap();
    }

    fn read(source: &Source) -> Self::Data {
        trees::snapshot(folder(source))
    }

    fn change(source: &Source) {
        let p = |s: &str| folder(source).join(s);
        std::fs::write(p("a.txt"), "changed\n").unwrap();
        std::fs::remove_file(p("sub/deeper/data.bin")).unwrap();
        std::fs::remove_dir(p("empty")).unwrap();
        std::fs::write(p("new.txt"), "not in the backup").unwrap();
    }

    fn not_stores() -> Vec<(&'static str, MakeAt)> {
        vec![
            ("a file", |at| std::fs::write(at, "not a folder").unwrap()),
            ("a symbolic link to a folder", |at| {
                let real = at.with_file_name("real-folder");
                std::fs::create_dir(&real).unwrap();
                std::fs::write(real.join("f"), "x").unwrap();
                std::os::unix::fs::symlink(&real, at).unwrap();
            }),
            ("a missing folder", |_| {}),
        ]
    }

    fn replace_by_link(source: &Source, other: &Source) {
        std::fs::remove_dir_all(folder(source)).unwrap();
        std::os::unix::fs::symlink(folder(other), folder(source)).unwrap();
    }

    fn expected_store_path(source: &Source) -> Option<PathBuf> {
        Some(folder(source).to_path_buf())
    }

    const FOLDERS: bool = true;
}

/// SQLite stores: a database file with a table of a few rows, one of them a blob.
struct SqliteStores;

fn db_file(source: &Source) -> &Path {
    match source {
        Source::Sqlite { path } => path,
        other => panic!("not a sqlite source: {other:?}"),
    }
}

fn sqlite_rows(source: &Source) -> Vec<(i64, String, Vec<u8>)> {
    let conn = rusqlite::Connection::open_with_flags(
        db_file(source),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn.prepare("SELECT id, v, b FROM t ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn sqlite_run(source: &Source, sql: &str) {
    rusqlite::Connection::open(db_file(source))
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

impl KindFixture for SqliteStores {
    type Data = Vec<(i64, String, Vec<u8>)>;
    const KIND: SourceKind = SourceKind::Sqlite;

    fn source(at: &Path) -> Source {
        Source::Sqlite {
            path: at.to_path_buf(),
        }
    }

    fn shown(source: &Source) -> String {
        db_file(source).display().to_string()
    }

    fn fill(source: &Source) {
        sqlite_run(
            source,
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL, b BLOB NOT NULL);
             INSERT INTO t VALUES (1, 'hello', x''), (2, 'ünïcödé ✓', randomblob(20000)),
                                  (3, 'three', x'00ff');",
        );
    }

    fn read(source: &Source) -> Self::Data {
        sqlite_rows(source)
    }

    fn change(source: &Source) {
        sqlite_run(
            source,
            "UPDATE t SET v = 'changed' WHERE id = 1; DELETE FROM t WHERE id = 2;
             INSERT INTO t VALUES (4, 'not in the backup', x'');",
        );
    }

    fn not_stores() -> Vec<(&'static str, MakeAt)> {
        vec![
            ("a folder", |at| std::fs::create_dir(at).unwrap()),
            ("a file that is not a database", |at| {
                std::fs::write(at, "not a database, just text").unwrap()
            }),
            ("a symbolic link to a database", |at| {
                let real = at.with_file_name("real.db");
                let source = SqliteStores::source(&real);
                kind::<SqliteStores>().provision(&source).unwrap();
                SqliteStores::fill(&source);
                std::os::unix::fs::symlink(&real, at).unwrap();
            }),
            ("a missing database", |_| {}),
        ]
    }

    fn replace_by_link(source: &Source, other: &Source) {
        std::fs::remove_file(db_file(source)).unwrap();
        std::os::unix::fs::symlink(db_file(other), db_file(source)).unwrap();
    }

    fn expected_store_path(source: &Source) -> Option<PathBuf> {
        Some(db_file(source).to_path_buf())
    }
}

/// PostgreSQL stores: databases on the test server (see `postgres.rs`), with a table of a
/// few rows. A store "at" a path is the database named after the path's folder (hashed) and
/// name, so that the stores of one test's folder share a prefix no other test uses.
struct PostgresStores;

fn pg() -> &'static crate::postgres::Pg {
    static PG: std::sync::OnceLock<Option<crate::postgres::Pg>> = std::sync::OnceLock::new();
    PG.get_or_init(crate::postgres::server)
        .as_ref()
        .expect("available() was checked")
}

/// What the names of the databases of the stores kept in `dir` start with.
fn pg_prefix(dir: &Path) -> String {
    let hash = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        dir.as_os_str().as_encoded_bytes(),
    );
    format!("bpc_{}_", &hash.simple().to_string()[..8])
}

fn pg_db(source: &Source) -> String {
    let Source::Postgres { url, .. } = source else {
        panic!("not a postgres source: {source:?}");
    };
    let base = url.rsplit_once('/').unwrap().1;
    base.to_string()
}

impl KindFixture for PostgresStores {
    type Data = Vec<String>;
    const KIND: SourceKind = SourceKind::Postgres;
    const ON_FILESYSTEM: bool = false;

    fn available() -> bool {
        static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *FOUND.get_or_init(|| {
            let found = crate::postgres::server().is_some();
            if found {
                pg();
            }
            found
        })
    }

    fn clean_up(dir: &Path) {
        let prefix = pg_prefix(dir);
        for db in pg().databases() {
            if db.starts_with(&prefix) {
                pg().drop_db(&db);
            }
        }
    }

    fn source(at: &Path) -> Source {
        let name = at.file_name().unwrap().to_str().unwrap();
        let db = format!("{}{name}", pg_prefix(at.parent().unwrap()));
        Source::Postgres {
            url: pg().url(&db),
            password_file: Some(pg().password_file.clone()),
            bin_dir: None,
        }
    }

    fn shown(source: &Source) -> String {
        format!("\"{}\"", pg_db(source))
    }

    fn fill(source: &Source) {
        pg().must(
            &pg_db(source),
            "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL, b bytea NOT NULL);
             INSERT INTO t VALUES (1, 'hello', ''), (2, 'ünïcödé ✓', decode(repeat('ab', 10000), 'hex')),
                                  (3, 'three', '\\x00ff');",
        );
    }

    fn read(source: &Source) -> Self::Data {
        pg().must(
            &pg_db(source),
            "SELECT id || ' ' || v || ' ' || md5(b) FROM t ORDER BY id",
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    fn change(source: &Source) {
        pg().must(
            &pg_db(source),
            "UPDATE t SET v = 'changed' WHERE id = 1; DELETE FROM t WHERE id = 2;
             INSERT INTO t VALUES (4, 'not in the backup', '');",
        );
    }

    fn not_stores() -> Vec<(&'static str, MakeAt)> {
        // A database either exists or not: there is no other kind of thing at its name.
        vec![("a missing database", |_| {})]
    }

    fn replace_by_link(_: &Source, _: &Source) {
        unreachable!("ON_FILESYSTEM is false: the link tests are skipped")
    }

    fn expected_store_path(_: &Source) -> Option<PathBuf> {
        None
    }

    fn around(dir: &Path) -> BTreeSet<OsString> {
        let prefix = pg_prefix(dir);
        pg().databases()
            .into_iter()
            .filter(|d| d.starts_with(&prefix))
            .map(OsString::from)
            .collect()
    }

    fn lookalikes(dir: &Path, store: &str) {
        let db = format!("{}{store}", pg_prefix(dir));
        for name in [
            format!("{db}__backplan_restore_"),
            format!("{db}__backplan_restore_1234567"),
            format!("{db}__backplan_restore_1234567g"),
            format!("{db}__backplan_other_12345678"),
            format!("{db}x__backplan_restore_12345678"),
            format!("{db}-copy"),
        ] {
            pg().must(
                "postgres",
                &format!("CREATE DATABASE {}", crate::postgres::ident(&name)),
            );
        }
    }
}
