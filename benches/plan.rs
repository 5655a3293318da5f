//! Planner benchmark: a steady-state host with 10,000 instances.
//!
//! Run with `cargo bench --bench plan`. Everything is generated here, deterministically: a
//! configuration of 10,000 instances (30% production, directory sources `/srv/iNNNNN`), each
//! with 10 on-demand backups (label + notes, the tenth in an external storage), and a
//! recorded state holding, per instance, 30 days of completed daily backups and the same 10
//! on-demand backups: 410,000 records, written once to a sled store in a temporary folder and
//! read back with `state::read`, as the CLI gets them. 1% of the labels differ between file
//! and state, so the plan has 1,000 backup edits. `now` is 5 minutes after today's daily
//! slot, so the time-driven part is a real daily tick: 10,000 daily backups due and 10,000
//! expiries (the 30-day-old daily of each instance, retention being `30d`).
//!
//! Timed (divan): (a) the whole `config::parse` + `plan::plan`, (b) parse + validate alone,
//! split into (b1) `raw::read` and (b2) `validate::validate`, (b0) the TOML tree `raw::read`
//! walks (`config::doc::parse`), (c) `plan::plan` alone; the TOML floors
//! `toml::from_str::<toml::Table>` and toml's span-keeping `DeTable::parse_recoverable` (which
//! `raw::read` was built on, and still falls back to), and under both `toml_parser`'s lexing
//! and events alone (`floor_toml_events`); `state::read` of the sled
//! store (open, load, close, as the CLI does), every record read from sled on an open store
//! (`sled_load`) and `Store::load` once the records are in memory (`memory_load`); a daemon
//! wake (records + `planner::next_deadline`) reading sled (`wake_sled`, as before the daemon
//! kept the records in memory) and from memory (`wake_memory`); and one bare pass over the
//! loaded backups for reference.
//!
//! The daemon's incremental plan (`planner::PlanCache`), on the same host once today's daily
//! tick is applied (the 10,000 dailies recorded: nothing embeds `now` any more): (d) after a
//! one-line edit of the file (one backup label), `config::parse` of the edited file then the
//! plan from the cache of the plan before the edit, a second later, as the daemon does on a
//! file change, the file before the edit freed after the timing as the daemon frees it after
//! applying the plan; (d3) the same with that free inside the timing; (d1)
//! that plan alone; (d2) the first plan through an empty cache (the
//! daemon's start); (c2) `plan::plan` of the same state, for comparison; (e) a daemon wake's
//! next deadline from the cache (`wake_cache`).
//!
//! Memory: a counting global allocator (over the system's, the binary's allocator) tracks
//! current and peak heap bytes. Before the timed runs, each step is run once under it and its peak
//! printed.
//!
//! Environment: `BACKPLAN_BENCH_ONESHOT=1` runs only the memory report (for
//! `/usr/bin/time -v`), `BACKPLAN_BENCH_SKIP_MEMORY=1` skips it (quick runs with a divan
//! filter such as `cargo bench --bench plan -- c_plan`), `BACKPLAN_BENCH_WRITE=DIR` only
//! writes the file and the sled state into DIR, to time the real `backplan plan` on them.

use std::alloc::{GlobalAlloc, Layout};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use backplan::config::values::Version;
use backplan::config::{self, Config, InstanceType, Source, SourceKind};
use backplan::plan::planner::{PlanCache, RecordChanges};
use backplan::plan::{self, PlanOptions, planner};
use backplan::records::{BackupKind, BackupRecord, BackupStatus, InstanceRecord, Recorded, Size};
use backplan::state;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use divan::Bencher;
use uuid::Uuid;

// ------------------------------------------------------------------------------------------
// Counting allocator: current and peak live heap bytes, over the binary's own allocator
// (the system's: see src/main.rs), so the timings are those of the daemon's allocator.

struct Counting;

static INNER: std::alloc::System = std::alloc::System;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Calls to the allocator (alloc, alloc_zeroed, and a realloc that grows): each is work for
/// malloc and, for most, a later free.
static CALLS: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn grow(n: usize) {
    CALLS.fetch_add(1, Relaxed);
    let now = CURRENT.fetch_add(n, Relaxed) + n;
    if now > PEAK.load(Relaxed) {
        PEAK.fetch_max(now, Relaxed);
    }
}

#[inline]
fn shrink(n: usize) {
    CURRENT.fetch_sub(n, Relaxed);
}

// SAFETY: every call is forwarded to `INNER`; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { INNER.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { INNER.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { INNER.dealloc(ptr, layout) };
        shrink(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { INNER.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size > layout.size() {
                grow(new_size - layout.size());
            } else {
                shrink(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap use of one call: the heap in use before it, the peak during it, and what its result
/// still holds afterwards.
struct Heap {
    before: usize,
    peak: usize,
    after: usize,
    calls: usize,
}

impl Heap {
    fn show(&self, what: &str) {
        eprintln!(
            "heap, {what}: peak {:.1} MiB above what was live before, result holds {:.1} MiB, {} allocator calls",
            mib(self.peak - self.before),
            mib(self.after.saturating_sub(self.before)),
            self.calls,
        );
    }
}

/// Runs `f` and returns its result with its [`Heap`] use.
fn heap_of<T>(f: impl FnOnce() -> T) -> (T, Heap) {
    let before = CURRENT.load(Relaxed);
    PEAK.store(before, Relaxed);
    let calls = CALLS.load(Relaxed);
    let out = f();
    let after = CURRENT.load(Relaxed);
    (
        out,
        Heap {
            before,
            peak: PEAK.load(Relaxed),
            after,
            calls: CALLS.load(Relaxed) - calls,
        },
    )
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

// ------------------------------------------------------------------------------------------
// The generated host.

const INSTANCES: usize = 10_000;
const ON_DEMAND: usize = 10;
const DAILY_DAYS: i64 = 30;
/// One backup label in this many differs between the file and the state.
const RELABEL_EVERY: usize = 100;
const FILE: &str = "/etc/backplan/backplan.toml";

const HEADER: &str = r#"[daemon]
state_dir = "/var/lib/backplan"

[schedule]
daily_at = "02:00"
timezone = "Europe/Paris"
retention = "30d"
keep_last_good = 1
min_backup_version = "8.1"

[storage.archive]
kind = "azure"
account = "contosobackups"
container = "backplan"
access_key_env = "BACKPLAN_ARCHIVE_KEY"
password_file = "@ARCHIVE_KEY@"
max_restore_age = "3y"
"#;

/// The external storage's `password_file` (validation reads it): a private file in the
/// temporary folder, written once.
fn archive_key() -> std::path::PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::env::temp_dir().join("backplan-bench-archive.key");
    if !path.exists() {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .expect("the bench's archive key");
        std::io::Write::write_all(&mut f, b"bench-archive-password\n").expect("written");
    }
    path
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 5, 4).expect("a date")
}

fn name(i: usize) -> String {
    format!("i{i:05}")
}

fn is_production(i: usize) -> bool {
    i % 10 < 3
}

fn version(i: usize) -> &'static str {
    if i.is_multiple_of(7) { "9.1" } else { "9.0" }
}

fn key(k: usize) -> String {
    format!("b{k:02}")
}

fn label(i: usize, k: usize) -> String {
    format!("Before change CR-{i}-{k}")
}

fn notes(i: usize, k: usize) -> String {
    format!("Taken by ops before applying change request CR-{i}-{k} to i{i:05}")
}

fn storage(k: usize) -> &'static str {
    if k == ON_DEMAND { "archive" } else { "local" }
}

/// Whether the file's label of backup `k` of instance `i` differs from the recorded one.
fn relabelled(i: usize, k: usize) -> bool {
    ((i - 1) * ON_DEMAND + (k - 1)).is_multiple_of(RELABEL_EVERY)
}

fn config_text() -> String {
    let mut s = String::with_capacity(INSTANCES * 1300 + HEADER.len());
    s.push_str(&HEADER.replace("@ARCHIVE_KEY@", &archive_key().display().to_string()));
    for i in 1..=INSTANCES {
        let n = name(i);
        let kind = if is_production(i) {
            "production"
        } else {
            "sandbox"
        };
        let _ = write!(
            s,
            "\n[instances.{n}]\ntype = \"{kind}\"\nversion = \"{}\"\nsource = {{ kind = \"directory\", path = \"/srv/{n}\" }}\n",
            version(i)
        );
        if is_production(i) {
            s.push_str("on_update = [\"/usr/local/bin/migrate\", \"--to\", \"{version}\"]\n");
        }
        for k in 1..=ON_DEMAND {
            let mut l = label(i, k);
            if relabelled(i, k) {
                l.push_str(" (renamed)");
            }
            let _ = write!(
                s,
                "\n[instances.{n}.backups.{}]\nlabel = \"{l}\"\nnotes = \"{}\"\n",
                key(k),
                notes(i, k)
            );
            if storage(k) != "local" {
                let _ = writeln!(s, "storage = \"{}\"", storage(k));
            }
        }
    }
    s
}

fn snapshot_id(id: Uuid) -> String {
    // 64 hex digits, like a restic snapshot id.
    format!("{:032x}{:032x}", id.as_u128(), id.as_u128().rotate_left(64))
}

fn recorded(cfg: &Config) -> Recorded {
    let s = &cfg.schedule;
    let today = today();
    let retention = Duration::days(DAILY_DAYS);
    let slots: Vec<(NaiveDate, DateTime<Utc>)> = (1..=DAILY_DAYS)
        .map(|d| {
            let date = today - Duration::days(d);
            (date, planner::slot_at(s, date))
        })
        .collect();
    let now = now(cfg);
    let ns = Uuid::from_u128(0x6265_6e63_6800_0000_8000_0000_0000_0000);
    let mut rec = Recorded::default();
    for i in 1..=INSTANCES {
        let n = name(i);
        let created = now - Duration::days(120);
        rec.instances.insert(
            n.clone(),
            InstanceRecord {
                name: n.clone(),
                kind: if is_production(i) {
                    InstanceType::Production
                } else {
                    InstanceType::Sandbox
                },
                version: Version::parse(version(i)).expect("a version"),
                source: Source::Directory {
                    path: format!("/srv/{n}").into(),
                },
                created_at: created,
                updated_at: created,
                error: None,
                creation_failed: false,
            },
        );
        let base = |id: Uuid, kind: BackupKind, created_at: DateTime<Utc>| BackupRecord {
            id,
            instance: n.clone(),
            source_kind: SourceKind::Directory,
            kind,
            key: None,
            created_by: kind.created_by(),
            label: String::new(),
            notes: String::new(),
            storage: "local".into(),
            status: BackupStatus::Completed,
            created_at,
            completed_at: Some(created_at + Duration::seconds(90 + (i % 60) as i64)),
            expires_at: Some(created_at + retention),
            size_bytes: Some(Size {
                read: 1 << 30,
                added: (i as u64 % 97 + 1) << 20,
            }),
            snapshot_id: Some(snapshot_id(id)),
            error: None,
            attempts: 1,
            failed_at: None,
            date: None,
            version: None,
            delete_at: None,
            status_before_delete: None,
            versions: Default::default(),
            unreadable: None,
        };
        for &(date, slot) in &slots {
            let id = planner::daily_id(&n, date);
            let mut b = base(id, BackupKind::Daily, slot);
            b.label = format!("Daily backup {date}");
            b.date = Some(date);
            rec.backups.insert(id, b);
        }
        for k in 1..=ON_DEMAND {
            let key = key(k);
            let id = Uuid::new_v5(&ns, format!("{n}/{key}").as_bytes());
            let created_at = now - Duration::days(k as i64) - Duration::hours(i as i64 % 24);
            let mut b = base(id, BackupKind::OnDemand, created_at);
            b.key = Some(key);
            b.label = label(i, k);
            b.notes = notes(i, k);
            b.storage = storage(k).into();
            if storage(k) != "local" {
                b.expires_at = None;
            }
            rec.backups.insert(id, b);
        }
    }
    rec
}

/// Five minutes after today's daily slot.
fn now(cfg: &Config) -> DateTime<Utc> {
    planner::slot_at(&cfg.schedule, today()) + Duration::minutes(5)
}

fn parse(text: &str) -> Config {
    match config::parse(Path::new(FILE), text) {
        Ok((cfg, _warnings)) => cfg,
        Err(diags) => panic!(
            "the generated file is invalid: {:?}",
            &diags[..diags.len().min(5)]
        ),
    }
}

/// (a): what `backplan plan` does between reading the file and rendering, once the state is
/// loaded.
fn whole(text: &str, rec: &Recorded, now: DateTime<Utc>) -> plan::Plan {
    let cfg = parse(text);
    plan::plan(&cfg, rec, now, PlanOptions::default())
}

/// The configuration side: the text, and the `Config` it validates into.
struct Fixture {
    text: String,
    config: Config,
    now: DateTime<Utc>,
}

/// The file's text alone: what the baselines parse. Run alone (`--bench baseline_toml_table`),
/// a baseline parses on a heap nothing of backplan has touched.
static TEXT: LazyLock<String> = LazyLock::new(|| {
    let t = Instant::now();
    let text = config_text();
    eprintln!(
        "fixture: config of {INSTANCES} instances, {:.1} MiB ({} lines), generated in {:.0?}",
        mib(text.len()),
        text.lines().count(),
        t.elapsed(),
    );
    text
});

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let text = TEXT.clone();
    let config = parse(&text);
    let now = now(&config);
    eprintln!("fixture: now = {now}");
    Fixture { text, config, now }
});

/// The recorded side, as the CLI gets it: generated, written once into a sled store in a
/// temporary directory (`Store::put_all`), the store closed, then read back with
/// `state::read`, so the records sit in memory the way a loaded state does.
struct State {
    dir: tempfile::TempDir,
    recorded: Recorded,
}

/// Folders the fixtures made, removed when `main` returns: a static is never dropped, and
/// each run's store takes ~700 MiB of the temporary folder.
static MADE: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());

static STATE: LazyLock<State> = LazyLock::new(|| {
    let f = &*FIXTURE;
    let t = Instant::now();
    let generated = recorded(&f.config);
    let took = t.elapsed();
    let dir = tempfile::tempdir().expect("a temporary directory");
    MADE.lock().unwrap().push(dir.path().to_path_buf());
    let t = Instant::now();
    {
        let store = state::Store::open(dir.path()).expect("a sled store");
        store.put_all(&generated).expect("records written");
    }
    let put = t.elapsed();
    let t = Instant::now();
    let recorded = state::read(dir.path()).expect("the state reads back");
    let read = t.elapsed();
    assert!(
        recorded == generated,
        "the sled round trip changed the state"
    );
    drop(generated);
    eprintln!(
        "fixture: {} instance and {} backup records generated in {took:.1?}, written with put_all in {put:.1?} ({:.0} MiB on disk), read back in {read:.1?}",
        recorded.instances.len(),
        recorded.backups.len(),
        mib(dir_size(dir.path()) as usize),
    );
    State { dir, recorded }
});

/// The daemon's side: the state once today's daily tick is applied (every instance's daily
/// of today recorded as completed), and the file with one backup label edited.
struct Daemon {
    ticked: Recorded,
    /// The fixture's file with the label of `i05000/b03` changed (one line).
    edited: String,
    /// The two files, validated.
    configs: [Arc<Config>; 2],
}

static DAEMON: LazyLock<Daemon> = LazyLock::new(|| {
    let (f, s) = (&*FIXTURE, &*STATE);
    let mut ticked = s.recorded.clone();
    let date = today();
    let slot = planner::slot_at(&f.config.schedule, date);
    for name in s.recorded.instances.keys() {
        let id = planner::daily_id(name, date);
        let mut b = s.recorded.backups.values().next().expect("records").clone();
        b.id = id;
        b.instance = name.clone();
        b.kind = BackupKind::Daily;
        b.key = None;
        b.created_by = BackupKind::Daily.created_by();
        b.label = format!("Daily backup {date}");
        b.notes = String::new();
        b.storage = "local".into();
        b.date = Some(date);
        b.created_at = slot;
        b.completed_at = Some(slot + Duration::seconds(90));
        b.expires_at = Some(slot + Duration::days(DAILY_DAYS));
        b.snapshot_id = Some(snapshot_id(id));
        ticked.backups.insert(id, b);
    }
    let old = format!("label = \"{}\"\n", label(5000, 3));
    assert_eq!(f.text.matches(&old).count(), 1, "one line to edit");
    let edited = f
        .text
        .replace(&old, &format!("label = \"{} (edited)\"\n", label(5000, 3)));
    let configs = [Arc::new(parse(&f.text)), Arc::new(parse(&edited))];
    // The incremental plan after the edit is the full plan.
    let mut cache = PlanCache::default();
    cache.update(&configs[0], &ticked, &RecordChanges::everything());
    cache.plan(&configs[0], &ticked, f.now, PlanOptions::default());
    cache.update(&configs[1], &ticked, &RecordChanges::default());
    let at = f.now + Duration::seconds(1);
    let incremental = cache.plan(&configs[1], &ticked, at, PlanOptions::default());
    let full = plan::plan(&configs[1], &ticked, at, PlanOptions::default());
    assert!(
        incremental == full,
        "the incremental plan differs from the full plan"
    );
    eprintln!(
        "fixture: today's tick applied ({} backup records); the plan after the edit: {} actions, {} due",
        ticked.backups.len(),
        full.actions.len(),
        full.due.len()
    );
    Daemon {
        ticked,
        edited,
        configs,
    }
});

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------------
// Memory measurement (untimed, once, before divan).

fn memory_report() {
    let f = &*FIXTURE;
    let s = &*STATE;
    let (p, h) = heap_of(|| whole(&f.text, &s.recorded, f.now));
    eprintln!(
        "plan: {} actions, {} due, {} refusals, {} notes",
        p.actions.len(),
        p.due.len(),
        p.refusals.len(),
        p.notes.len()
    );
    assert!(
        p.refusals.is_empty(),
        "unexpected refusals: {:?}",
        &p.refusals[..p.refusals.len().min(3)]
    );
    drop(p);
    h.show("(a) whole parse+validate+plan");
    eprintln!(
        "heap, live before (a): {:.1} MiB (config text + its Config + the loaded state); absolute peak during (a): {:.1} MiB",
        mib(h.before),
        mib(h.peak)
    );
    let (cfg, h) = heap_of(|| parse(&f.text));
    drop(cfg);
    h.show("(b) parse+validate");
    let (r, h) = heap_of(|| backplan::config::raw::read(&f.text));
    drop(r);
    h.show("(b1) raw::read");
    let raw = backplan::config::raw::read(&f.text).config.expect("TOML");
    let skipped = Default::default();
    let (c, h) =
        heap_of(|| backplan::config::validate::validate(raw, &skipped, Path::new(FILE), &f.text));
    drop(c);
    h.show("(b2) validate");
    let (p, h) = heap_of(|| plan::plan(&f.config, &s.recorded, f.now, PlanOptions::default()));
    drop(p);
    h.show("(c) plan");
    let (t, h) = heap_of(|| toml::from_str::<toml::Table>(&f.text).expect("TOML"));
    drop(t);
    h.show("baseline toml::from_str::<Table>");
    let (t, h) = heap_of(|| toml::de::DeTable::parse_recoverable(&f.text));
    drop(t);
    h.show("baseline DeTable::parse_recoverable");
    let (t, h) = heap_of(|| backplan::config::doc::parse(&f.text).is_ok());
    assert!(t, "the generated file is TOML");
    h.show("(b0) config::doc::parse");
    let t = Instant::now();
    let (r, h) = heap_of(|| state::read(s.dir.path()).expect("the state reads back"));
    let took = t.elapsed();
    drop(r);
    h.show(&format!(
        "state::read of the sled store ({took:.1?}); the result is the loaded state"
    ));
}

/// Writes the file and the sled state into `dir`, for timing the real CLI on them.
fn write_host(dir: &Path) {
    let f = &*FIXTURE;
    let state_dir = dir.join("state");
    let text = f.text.replacen(
        "state_dir = \"/var/lib/backplan\"",
        &format!("state_dir = \"{}\"", state_dir.display()),
        1,
    );
    std::fs::create_dir_all(&state_dir).expect("the state folder");
    std::fs::write(dir.join("backplan.toml"), text).expect("the file written");
    let store = state::Store::open(&state_dir).expect("a sled store");
    store
        .put_all(&recorded(&f.config))
        .expect("records written");
    eprintln!(
        "wrote {} and {}; try: backplan plan -c {} --at {}",
        dir.join("backplan.toml").display(),
        state_dir.display(),
        dir.join("backplan.toml").display(),
        f.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
}

fn main() {
    run();
    for dir in MADE.lock().unwrap().iter() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn run() {
    // `BACKPLAN_BENCH_WRITE=DIR`: only write the host to DIR (for `backplan plan`).
    if let Some(dir) = std::env::var_os("BACKPLAN_BENCH_WRITE") {
        write_host(Path::new(&dir));
        return;
    }
    // `BACKPLAN_BENCH_ONESHOT=1`: only the memory report (for `/usr/bin/time -v`).
    if std::env::var_os("BACKPLAN_BENCH_ONESHOT").is_some() {
        memory_report();
        return;
    }
    // `BACKPLAN_BENCH_SKIP_MEMORY=1`: no memory report (quicker runs with a divan filter).
    if std::env::var_os("BACKPLAN_BENCH_SKIP_MEMORY").is_none() {
        memory_report();
    }
    divan::main();
}

// ------------------------------------------------------------------------------------------
// Timed benchmarks. Slow ones take one run per sample and stop after 60 s.

/// (a) `config::parse` (read + validate) then `plan::plan`, on the loaded state.
#[divan::bench(sample_count = 10, sample_size = 1, max_time = 60)]
fn a_whole_parse_validate_plan(b: Bencher) {
    let (f, s) = (&*FIXTURE, &*STATE);
    b.bench(|| whole(divan::black_box(&f.text), &s.recorded, f.now));
}

/// (b) `config::parse` alone.
#[divan::bench(sample_count = 10, sample_size = 1, max_time = 60)]
fn b_parse_validate(b: Bencher) {
    let f = &*FIXTURE;
    b.bench(|| parse(divan::black_box(&f.text)));
}

/// (b0) the TOML tree the reader walks (`config::doc::parse`, its quick builder on this file),
/// built and freed: against `baseline_toml_detable`, toml's tree of the same text.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn b0_toml_tree(b: Bencher) {
    let f = &*FIXTURE;
    b.bench(|| backplan::config::doc::parse(divan::black_box(&f.text)).is_ok());
}

/// (b1) the reader alone: TOML with spans to `RawConfig`, structural checks.
#[divan::bench(sample_count = 10, sample_size = 1, max_time = 60)]
fn b1_raw_read(b: Bencher) {
    let f = &*FIXTURE;
    b.bench(|| backplan::config::raw::read(divan::black_box(&f.text)));
}

/// (b2) validation alone: `RawConfig` to `Config` (the reader's output made outside the
/// timing; validation consumes it, and frees what it does not move into the model).
#[divan::bench(sample_count = 10, sample_size = 1, max_time = 60)]
fn b2_validate(b: Bencher) {
    let f = &*FIXTURE;
    let skipped = Default::default();
    b.with_inputs(|| backplan::config::raw::read(&f.text).config.expect("TOML"))
        .bench_local_values(|raw| {
            backplan::config::validate::validate(
                divan::black_box(raw),
                &skipped,
                Path::new(FILE),
                &f.text,
            )
        });
}

/// (c) `plan::plan` alone, on the validated config and the loaded state.
#[divan::bench(sample_count = 10, sample_size = 1, max_time = 60)]
fn c_plan(b: Bencher) {
    let (f, s) = (&*FIXTURE, &*STATE);
    b.bench(|| {
        plan::plan(
            divan::black_box(&f.config),
            &s.recorded,
            f.now,
            PlanOptions::default(),
        )
    });
}

/// Baseline: the floor any TOML-based configuration pays.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn baseline_toml_table(b: Bencher) {
    let text = &*TEXT;
    b.bench(|| toml::from_str::<toml::Table>(divan::black_box(text)).expect("TOML"));
}

/// Baseline 2: the span-keeping borrowed parse `raw::read` is built on.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn baseline_toml_detable(b: Bencher) {
    let text = &*TEXT;
    b.bench(|| toml::de::DeTable::parse_recoverable(divan::black_box(text)));
}

/// The floor under both trees: `toml_parser` lexing the text and parsing it into events,
/// each event handed to a receiver that only counts the keys.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn floor_toml_events(b: Bencher) {
    struct Keys(usize);
    impl toml_parser::parser::EventReceiver for Keys {
        fn simple_key(
            &mut self,
            _: toml_parser::Span,
            _: Option<toml_parser::decoder::Encoding>,
            _: &mut dyn toml_parser::ErrorSink,
        ) {
            self.0 += 1;
        }
    }
    let text = &*TEXT;
    b.bench(|| {
        let source = toml_parser::Source::new(divan::black_box(text));
        let tokens = source.lex().into_vec();
        let (mut keys, mut errors) = (Keys(0), Vec::<toml_parser::ParseError>::new());
        toml_parser::parser::parse_document(&tokens, &mut keys, &mut errors);
        assert!(errors.is_empty(), "the generated file is TOML");
        keys.0
    });
}

/// `state::read`: open the sled store, load the 410k records (10k instances, 400k backups),
/// close it. The CLI pays this before planning.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn sled_read(b: Bencher) {
    let s = &*STATE;
    b.bench(|| state::read(divan::black_box(s.dir.path())).expect("the state reads back"));
}

/// Reading every record from sled on a store opened once (outside the timing):
/// `Store::read_all`, what `Store::load` costs when it reads (the first time, after an error).
#[divan::bench(sample_count = 5, sample_size = 1)]
fn sled_load(b: Bencher) {
    let store = open_store();
    b.bench(|| {
        divan::black_box(&store)
            .read_all()
            .expect("the state loads")
    });
}

/// `Store::load` once the records are in memory (read once, outside the timing).
#[divan::bench(sample_count = 10)]
fn memory_load(b: Bencher) {
    let store = open_store();
    store.load().expect("the state loads");
    b.bench(|| divan::black_box(&store).load().expect("the state loads"));
}

/// A daemon wake as it was: every record read from sled, then `planner::next_deadline`.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn wake_sled(b: Bencher) {
    let (f, store) = (&*FIXTURE, open_store());
    b.bench(|| {
        let rec = divan::black_box(&store)
            .read_all()
            .expect("the state loads");
        planner::next_deadline(&f.config, &rec, f.now)
    });
}

/// A daemon wake now: the records in memory, then `planner::next_deadline`.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn wake_memory(b: Bencher) {
    let (f, store) = (&*FIXTURE, open_store());
    store.load().expect("the state loads");
    b.bench(|| {
        let rec = divan::black_box(&store).load().expect("the state loads");
        planner::next_deadline(&f.config, &rec, f.now)
    });
}

/// (d) The daemon on a file change of one line: `config::parse` of the edited file, then the
/// plan from the cache of the plan before the edit, a second later. The file alternates
/// between the two versions, so every sample is a one-line edit. The file before the edit,
/// which `PlanCache::update` hands back, is freed after the timing (divan drops what the
/// sample returns afterwards), as the daemon frees it after applying the plan
/// (`daemon::reconcile`).
#[divan::bench(sample_count = 10, sample_size = 1, max_time = 60)]
fn d_daemon_edit_parse_validate_incremental_plan(b: Bencher) {
    let (f, d) = (&*FIXTURE, &*DAEMON);
    let mut cache = PlanCache::default();
    cache.update(&d.configs[0], &d.ticked, &RecordChanges::everything());
    cache.plan(&d.configs[0], &d.ticked, f.now, PlanOptions::default());
    let mut k = 0;
    b.bench_local(|| {
        k += 1;
        let text = if k % 2 == 1 { &d.edited } else { &f.text };
        let cfg = Arc::new(parse(divan::black_box(text)));
        let previous = cache.update(&cfg, &d.ticked, &RecordChanges::default());
        let at = f.now + Duration::seconds(k);
        (
            cache.plan(&cfg, &d.ticked, at, PlanOptions::default()),
            previous,
        )
    });
}

/// (d3) As (d), the file before the edit freed inside the timing (what the daemon did before
/// `PlanCache::update` handed it back): the cost of that free.
#[divan::bench(sample_count = 10, sample_size = 1, max_time = 60)]
fn d3_daemon_edit_freeing_the_old_file_in_the_timing(b: Bencher) {
    let (f, d) = (&*FIXTURE, &*DAEMON);
    let mut cache = PlanCache::default();
    cache.update(&d.configs[0], &d.ticked, &RecordChanges::everything());
    cache.plan(&d.configs[0], &d.ticked, f.now, PlanOptions::default());
    let mut k = 0;
    b.bench_local(|| {
        k += 1;
        let text = if k % 2 == 1 { &d.edited } else { &f.text };
        let cfg = Arc::new(parse(divan::black_box(text)));
        drop(cache.update(&cfg, &d.ticked, &RecordChanges::default()));
        let at = f.now + Duration::seconds(k);
        cache.plan(&cfg, &d.ticked, at, PlanOptions::default())
    });
}

/// (d1) The incremental plan alone after a one-line edit (both files validated beforehand).
#[divan::bench(sample_count = 10, sample_size = 1, max_time = 60)]
fn d1_incremental_plan(b: Bencher) {
    let (f, d) = (&*FIXTURE, &*DAEMON);
    let mut cache = PlanCache::default();
    cache.update(&d.configs[0], &d.ticked, &RecordChanges::everything());
    cache.plan(&d.configs[0], &d.ticked, f.now, PlanOptions::default());
    let mut k = 0;
    b.bench_local(|| {
        k += 1;
        let cfg = &d.configs[k as usize % 2];
        cache.update(cfg, &d.ticked, &RecordChanges::default());
        let at = f.now + Duration::seconds(k);
        cache.plan(cfg, &d.ticked, at, PlanOptions::default())
    });
}

/// (d2) The first plan through an empty cache (the daemon's start, or after the records
/// were read again): everything computed, instance by instance.
#[divan::bench(sample_count = 10, sample_size = 1, max_time = 60)]
fn d2_first_plan_through_the_cache(b: Bencher) {
    let (f, d) = (&*FIXTURE, &*DAEMON);
    b.bench(|| {
        let mut cache = PlanCache::default();
        cache.update(&d.configs[0], &d.ticked, &RecordChanges::everything());
        cache.plan(&d.configs[0], &d.ticked, f.now, PlanOptions::default())
    });
}

/// (c2) `plan::plan` of the state with today's tick applied.
#[divan::bench(sample_count = 10, sample_size = 1, max_time = 60)]
fn c2_plan_ticked(b: Bencher) {
    let (f, d) = (&*FIXTURE, &*DAEMON);
    b.bench(|| {
        plan::plan(
            divan::black_box(&d.configs[1]),
            &d.ticked,
            f.now + Duration::seconds(1),
            PlanOptions::default(),
        )
    });
}

/// (e) A daemon wake now: the next deadline from the cache (no record changed).
#[divan::bench(sample_count = 10)]
fn wake_cache(b: Bencher) {
    let (f, d) = (&*FIXTURE, &*DAEMON);
    let mut cache = PlanCache::default();
    cache.update(&d.configs[0], &d.ticked, &RecordChanges::everything());
    b.bench_local(|| {
        cache.update(&d.configs[0], &d.ticked, &RecordChanges::default());
        cache.next_deadline(&d.configs[0], f.now)
    });
}

/// The fixture's sled store, opened (waiting for a store of an earlier benchmark in this
/// process to let go of its lock).
fn open_store() -> state::Store {
    let s = &*STATE;
    let start = Instant::now();
    loop {
        match state::Store::open(s.dir.path()) {
            Err(state::StateError::Locked { .. })
                if start.elapsed() < std::time::Duration::from_secs(10) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other.expect("the sled store opens"),
        }
    }
}

/// Reference: one bare pass over the 400k loaded backups that reads a field of each record
/// and the first byte of its instance name (a heap string): the least any per-backup pass of
/// the planner costs.
#[divan::bench(sample_count = 10)]
fn floor_one_pass_over_backups(b: Bencher) {
    let s = &*STATE;
    b.bench(|| {
        divan::black_box(&s.recorded)
            .backups
            .values()
            .filter(|b| b.status == BackupStatus::Completed && b.instance.as_bytes()[0] == b'i')
            .count()
    });
}
