//! Writes a host at scale for the daemon benchmark (`benches/daemon-scale.sh`): a
//! `backplan.toml` of 1,000 instances, each with 10 on-demand backups, and a state folder
//! holding, per instance, 90 days of completed daily backups (today's included) and the same
//! 10 on-demand backups: 1,000 instance and 100,000 backup records, written through
//! `state::Store::put_all` (the real store code). Everything is relative to the current
//! time, so a daemon started on the host with the system clock finds nothing to do (no slot
//! missed, nothing expiring for 30 days): what it then does is what the file's edits ask.
//!
//! The backup the benchmark edits (`i00500/b05`, [`EDITED`]) is real: an edit of its label
//! rewrites its snapshot's tags, so it needs a snapshot in a repository. Before the records
//! are written, `backplan apply` (the binary `BACKPLAN_SCALE_BIN`, by default the `backplan`
//! built beside this benchmark) runs on a file of that one instance and backup, with the same
//! state folder and a small source folder under the host (`data/i00500`); its records are
//! kept as written. The other 99,999 backups have made-up snapshot ids and are never edited.
//!
//! ```sh
//! cargo build --bin backplan
//! BACKPLAN_SCALE_WRITE=/tmp/host cargo bench --bench scale_host
//! BACKPLAN_SCALE_INSTANCES=10000 BACKPLAN_SCALE_WRITE=/tmp/host10k cargo bench --bench scale_host
//! ```
//!
//! Without `BACKPLAN_SCALE_WRITE` it only says how to use it (so `cargo bench` stays quick).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use backplan::config::values::Version;
use backplan::config::{self, InstanceType, Source, SourceKind};
use backplan::plan::planner;
use backplan::records::{BackupKind, BackupRecord, BackupStatus, InstanceRecord, Recorded, Size};
use backplan::state;
use chrono::{Duration, Utc};
use uuid::Uuid;

const ON_DEMAND: usize = 10;
const DAILY_DAYS: i64 = 90;
/// The instance and on-demand backup the benchmark edits (the instance is the last one when
/// there are fewer).
const EDITED: (usize, usize) = (500, 5);

fn name(i: usize) -> String {
    format!("i{i:05}")
}

fn label(i: usize, k: usize) -> String {
    format!("Before change CR-{i}-{k}")
}

fn notes(i: usize, k: usize) -> String {
    format!("Taken by ops before applying change request CR-{i}-{k} to i{i:05}")
}

fn is_production(i: usize) -> bool {
    i % 10 < 3
}

/// The source folder of instance `i`: a real one under the host for the edited instance.
fn source_path(dir: &Path, edited: usize, i: usize) -> PathBuf {
    if i == edited {
        dir.join("data").join(name(i))
    } else {
        PathBuf::from(format!("/srv/{}", name(i)))
    }
}

/// The file: `instances` (all of them, `1..=instances`) and their on-demand backups, or with
/// `only = Some((i, k))` instance `i` with backup `k` alone (the file the real backup is taken
/// with).
fn config_text(
    instances: usize,
    dir: &Path,
    state_dir: &Path,
    edited: usize,
    only: Option<(usize, usize)>,
) -> String {
    let mut s = String::with_capacity(instances * 1300);
    let _ = write!(
        s,
        "[daemon]\nstate_dir = \"{}\"\n\n[schedule]\ndaily_at = \"02:00\"\ntimezone = \"UTC\"\nretention = \"120d\"\nkeep_last_good = 1\n",
        state_dir.display()
    );
    for i in 1..=instances {
        if only.is_some_and(|(o, _)| o != i) {
            continue;
        }
        let n = name(i);
        let kind = if is_production(i) {
            "production"
        } else {
            "sandbox"
        };
        let _ = write!(
            s,
            "\n[instances.{n}]\ntype = \"{kind}\"\nversion = \"9.0\"\nsource = {{ kind = \"directory\", path = \"{}\" }}\n",
            source_path(dir, edited, i).display()
        );
        for k in 1..=ON_DEMAND {
            if only.is_some_and(|(_, o)| o != k) {
                continue;
            }
            let _ = write!(
                s,
                "\n[instances.{n}.backups.b{k:02}]\nlabel = \"{}\"\nnotes = \"{}\"\n",
                label(i, k),
                notes(i, k)
            );
        }
    }
    s
}

fn main() {
    let Some(dir) = std::env::var_os("BACKPLAN_SCALE_WRITE").map(PathBuf::from) else {
        eprintln!(
            "scale_host: set BACKPLAN_SCALE_WRITE=DIR to write the host (see the file's doc)"
        );
        return;
    };
    let instances: usize = std::env::var("BACKPLAN_SCALE_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    std::fs::create_dir_all(&dir).expect("the host folder");
    let dir = std::fs::canonicalize(&dir).expect("the host folder");
    let state_dir = dir.join("state");
    let file = dir.join("backplan.toml");
    let edited = EDITED.0.min(instances);
    let real = real_backup(&dir, &state_dir, instances, edited);
    let text = config_text(instances, &dir, &state_dir, edited, None);
    std::fs::write(&file, &text).expect("the file");
    let (cfg, _) = config::parse(&file, &text).unwrap_or_else(|d| panic!("invalid: {:?}", &d[..1]));

    let s = &cfg.schedule;
    let now = Utc::now();
    let today = planner::local_date(s, now);
    let retention = Duration::days(120);
    let ns = Uuid::from_u128(0x7363_616c_6500_0000_8000_0000_0000_0000);
    let mut rec = Recorded::default();
    for i in 1..=instances {
        let n = name(i);
        let created = now - Duration::days(DAILY_DAYS + 30);
        rec.instances.insert(
            n.clone(),
            InstanceRecord {
                name: n.clone(),
                kind: if is_production(i) {
                    InstanceType::Production
                } else {
                    InstanceType::Sandbox
                },
                version: Version::parse("9.0").expect("a version"),
                source: Source::Directory {
                    path: source_path(&dir, edited, i),
                },
                created_at: created,
                updated_at: created,
                error: None,
                creation_failed: false,
            },
        );
        let base = |id: Uuid, kind: BackupKind, at| BackupRecord {
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
            created_at: at,
            completed_at: Some(at + Duration::seconds(90)),
            expires_at: Some(at + retention),
            size_bytes: Some(Size {
                read: 1 << 30,
                added: (i as u64 % 97 + 1) << 20,
            }),
            snapshot_id: Some(format!("{:064x}", id.as_u128())),
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
        // Today's slot is recorded even before it passes: nothing is due.
        for d in 0..DAILY_DAYS {
            let date = today - Duration::days(d);
            let id = planner::daily_id(&n, date);
            let mut b = base(id, BackupKind::Daily, planner::slot_at(s, date).min(now));
            b.label = format!("Daily backup {date}");
            b.date = Some(date);
            rec.backups.insert(id, b);
        }
        for k in 1..=ON_DEMAND {
            if (i, k) == (edited, EDITED.1) {
                continue; // the real one, as `backplan apply` recorded it
            }
            let id = Uuid::new_v5(&ns, format!("{n}/b{k:02}").as_bytes());
            let mut b = base(id, BackupKind::OnDemand, now - Duration::days(k as i64));
            b.key = Some(format!("b{k:02}"));
            b.label = label(i, k);
            b.notes = notes(i, k);
            rec.backups.insert(id, b);
        }
    }
    let store = state::Store::open(&state_dir).expect("the state store");
    store.put_all(&rec).expect("the records");
    let all = store.load().expect("the records");
    drop(store);
    eprintln!(
        "scale_host: {} ({} instances, {} bytes) and {} ({} instance and {} backup records; {}/b{:02} is backup {} with snapshot {})",
        file.display(),
        instances,
        text.len(),
        state_dir.display(),
        all.instances.len(),
        all.backups.len(),
        name(edited),
        EDITED.1,
        real.id,
        real.snapshot_id.as_deref().unwrap_or("-"),
    );
}

/// Takes the edited backup for real: `backplan apply` on a file of that instance and backup
/// alone, over a small source folder, into the host's state folder and local repository.
/// Returns its record.
fn real_backup(dir: &Path, state_dir: &Path, instances: usize, edited: usize) -> BackupRecord {
    let source = source_path(dir, edited, edited);
    std::fs::create_dir_all(source.join("conf")).expect("the source folder");
    for f in 0..20 {
        std::fs::write(
            source.join("conf").join(format!("file{f:02}.txt")),
            format!("setting {f} of {}\n", name(edited)).repeat(50),
        )
        .expect("a source file");
    }
    let seed = dir.join("seed.toml");
    let text = config_text(instances, dir, state_dir, edited, Some((edited, EDITED.1)));
    std::fs::write(&seed, text).expect("the seed file");
    let bin = std::env::var_os("BACKPLAN_SCALE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // target/<profile>/deps/scale_host-<hash> -> target/<profile>/backplan
            let exe = std::env::current_exe().expect("this benchmark's path");
            exe.parent()
                .and_then(Path::parent)
                .expect("the target folder")
                .join("backplan")
        });
    let out = std::process::Command::new(&bin)
        .args(["apply", "--auto-approve", "-c"])
        .arg(&seed)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e} (set BACKPLAN_SCALE_BIN)", bin.display()));
    assert!(
        out.status.success(),
        "{} apply failed:\n{}{}",
        bin.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&seed).expect("the seed file");
    let store = state::Store::open(state_dir).expect("the state store");
    let rec = store.load().expect("the records");
    let key = format!("b{:02}", EDITED.1);
    let b = rec
        .backups
        .values()
        .find(|b| b.instance == name(edited) && b.key.as_deref() == Some(&key))
        .cloned()
        .expect("the backup `backplan apply` took");
    assert!(
        b.status == BackupStatus::Completed && b.snapshot_id.is_some(),
        "the real backup did not complete: {b:?}"
    );
    b
}
