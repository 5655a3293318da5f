//! Idle (issue 13): once it has nothing to do, the daemon's own threads sleep until the next
//! deadline or an event, without waking in between. sled's threads (its I/O pool and log
//! flusher) are not ours and are left out; BENCHMARKS.md reports them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::daemon::{Daemon, has, prepared};

/// Context switches (voluntary + not) of each thread of `pid` by thread id, with its name.
fn switches(pid: u32) -> BTreeMap<String, (String, u64)> {
    let mut out = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let (Ok(name), Ok(status)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("status")),
        ) else {
            continue; // the thread exited meanwhile
        };
        let n: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        let tid = task.file_name().unwrap().to_string_lossy().into_owned();
        out.insert(tid, (name.trim().to_string(), n));
    }
    out
}

fn is_sled(name: &str) -> bool {
    name.starts_with("sled") || name == "log flusher"
}

#[test]
fn the_daemons_own_threads_do_not_wake_while_idle() {
    let tmp = prepared();
    let dir = tmp.path();
    // The system clock: the daily slot (02:00 UTC) is the next deadline, hours away unless
    // the test runs right at it.
    let d = Daemon::start(dir, &[], &[]);
    d.wait_for("the first apply", || has(dir, "before-import", "completed"));
    d.wait_for("idle", || {
        d.log()
            .lines()
            .last()
            .is_some_and(|l| l.ends_with("nothing to do"))
    });
    // The runtime's blocking threads end 10 s after their last task; let them go.
    std::thread::sleep(Duration::from_secs(12));
    let pid = d.pid();
    let before = switches(pid);
    std::thread::sleep(Duration::from_secs(3));
    let after = switches(pid);
    let woke: Vec<String> = after
        .iter()
        .filter(|(_, (name, _))| !is_sled(name))
        .filter_map(|(tid, (name, n))| {
            let (_, was) = before.get(tid)?;
            (n > was).then(|| format!("{name} ({tid}): {} wake-ups", n - was))
        })
        .collect();
    let ours = after.values().filter(|(n, _)| !is_sled(n)).count();
    assert!(ours >= 2, "the daemon's threads were seen: {after:?}");
    assert!(
        woke.is_empty(),
        "backplan's own threads woke while idle: {woke:?}\n{}",
        d.log()
    );
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}
