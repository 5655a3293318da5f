//! `backplan run` with the real binary: following the file, keeping the last good one,
//! signals, systemd notifications, crash recovery, the daily slot and expiry with a moved
//! clock, and the control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::trees::*;

pub(crate) struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
}

impl Daemon {
    pub(crate) fn start(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backplan"));
        cmd.args(["run", "-c", "backplan.toml"])
            .args(extra)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let d = Daemon {
            child: Some(child),
            dir: dir.to_path_buf(),
        };
        d.wait_for("the socket", || dir.join("state/backplan.sock").exists());
        d
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub(crate) fn wait_for(&self, what: &str, mut ok: impl FnMut() -> bool) {
        // Generous: it returns as soon as `ok` holds, and under CI's load a day of expiries,
        // a prune and the dailies took over 30 s once (state_growth).
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(120) {
            if ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}; daemon log:\n{}", self.log());
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// Sends SIGTERM and returns the exit status and how long the stop took.
    pub(crate) fn stop(mut self) -> (Option<i32>, Duration) {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        let mut child = self.child.take().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code(), start.elapsed());
            }
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "the daemon did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn statuses(dir: &Path) -> Vec<(String, String)> {
    backups_json(dir)
        .iter()
        .map(|b| {
            let name = b["key"].as_str().map(String::from).unwrap_or_else(|| {
                format!(
                    "{}:{}",
                    b["kind"].as_str().unwrap(),
                    b["date"].as_str().unwrap_or("")
                )
            });
            (name, b["status"].as_str().unwrap().to_string())
        })
        .collect()
}

pub(crate) fn has(dir: &Path, name: &str, status: &str) -> bool {
    statuses(dir).iter().any(|(n, s)| n == name && s == status)
}

pub(crate) fn prepared() -> tempfile::TempDir {
    let tmp = quickstart_copy();
    std::fs::create_dir_all(tmp.path().join("data/contoso")).unwrap();
    std::fs::write(tmp.path().join("data/contoso/a.txt"), "hello").unwrap();
    tmp
}

#[test]
fn the_daemon_follows_the_file_and_keeps_the_last_good_one() {
    let tmp = prepared();
    let dir = tmp.path();
    // systemd's notification socket, played by the test.
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let d = Daemon::start(
        dir,
        &[],
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    let mut messages = Vec::new();
    let read_until = |want: &str, messages: &mut Vec<String>| {
        let mut buf = [0u8; 4096];
        while !messages.iter().any(|m: &String| m.contains(want)) {
            let n = notify
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {want} from the daemon: {e}; got {messages:?}"));
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    read_until("READY=1", &mut messages);
    d.wait_for("the first apply", || has(dir, "before-import", "completed"));

    // Added by rename-into-place (editors, git checkout).
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    let with_b2 = format!("{text}\n[instances.contoso.backups.b2]\nlabel = \"by rename\"\n");
    std::fs::write(dir.join("new.toml"), &with_b2).unwrap();
    std::fs::rename(dir.join("new.toml"), dir.join("backplan.toml")).unwrap();
    d.wait_for("b2", || has(dir, "b2", "completed"));

    // Added by an in-place write.
    append_config(dir, "[instances.contoso.backups.b3]\nlabel = \"in place\"");
    d.wait_for("b3", || has(dir, "b3", "completed"));

    // Removed: deleting (its data waits out the deletion grace).
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    std::fs::write(
        dir.join("backplan.toml"),
        text.replace(
            "[instances.contoso.backups.b2]\nlabel = \"by rename\"\n",
            "",
        ),
    )
    .unwrap();
    d.wait_for("b2 deleting", || has(dir, "b2", "deleting"));

    // An invalid file: nothing changes, status shows the error.
    let good = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    std::fs::write(
        dir.join("backplan.toml"),
        format!("{good}\n[instances.contoso.backups.b4]\nlabel = \"b4\"\nlable = \"typo\"\n"),
    )
    .unwrap();
    d.wait_for("the error in status", || {
        let run = backplan(dir, &["status", "-c", "backplan.toml"]);
        run.stderr.contains("unknown key `lable`")
            && run.stderr.contains("the last valid one stays in force")
    });
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !statuses(dir).iter().any(|(n, _)| n == "b4"),
        "an invalid file was applied"
    );

    // Fixed: work resumes.
    std::fs::write(
        dir.join("backplan.toml"),
        format!("{good}\n[instances.contoso.backups.b4]\nlabel = \"b4\"\n"),
    )
    .unwrap();
    d.wait_for("b4", || has(dir, "b4", "completed"));
    let run = backplan(dir, &["status", "-c", "backplan.toml"]);
    assert!(!run.stderr.contains("invalid"), "{}", run.stderr);

    // A deleted file is not "no instances": nothing changes.
    let before = statuses(dir);
    let kept = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    std::fs::remove_file(dir.join("backplan.toml")).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(dir.join("backplan.toml"), &kept).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(statuses(dir), before);
    assert!(dir.join("data/contoso/a.txt").exists());

    // SIGHUP reloads, with systemd's RELOADING=1 (and the monotonic time) then READY=1.
    // (Drain what queued meanwhile: a full queue makes the daemon drop messages.)
    notify.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while notify.recv(&mut buf).is_ok() {}
    notify.set_nonblocking(false).unwrap();
    messages.clear();
    d.signal(libc::SIGHUP);
    read_until("RELOADING=1", &mut messages);
    let reloading = messages.iter().find(|m| m.contains("RELOADING=1")).unwrap();
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    read_until("READY=1", &mut messages);

    // A malformed request gets an error reply and disturbs nothing.
    let mut s = UnixStream::connect(dir.join("state/backplan.sock")).unwrap();
    s.write_all(b"{\"command\": \"format-disk\"}\nnot json at all\n")
        .unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..2 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"error\""), "{line}");
    }
    assert_eq!(backplan(dir, &["status", "-c", "backplan.toml"]).code, 0);

    // SIGTERM: STOPPING=1, exit 0 within 10 s.
    let (code, took) = d.stop();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    let mut buf = [0u8; 4096];
    let mut stopping = false;
    while let Ok(n) = notify.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1");
    assert!(
        !dir.join("state/backplan.sock").exists(),
        "the socket is removed"
    );
}

#[test]
fn stopped_or_killed_during_a_long_backup_a_restart_converges() {
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let tmp = prepared();
        let dir = tmp.path();
        std::fs::write(dir.join("data/contoso/large.bin"), random_bytes(160 << 20)).unwrap();
        let d = Daemon::start(dir, &[], &[]);
        d.wait_for("the backup to start", || d.log().contains("reconciling"));
        std::thread::sleep(Duration::from_millis(700));
        if signal == libc::SIGTERM {
            let (code, took) = d.stop();
            assert_eq!(
                code,
                Some(0),
                "{}",
                std::fs::read_to_string(dir.join("daemon.log")).unwrap()
            );
            assert!(took < Duration::from_secs(10), "stopping took {took:?}");
        } else {
            let mut d = d;
            let mut child = d.child.take().unwrap();
            child.kill().unwrap();
            child.wait().unwrap();
        }
        // Two CLI commands at once while the restarted daemon works.
        let d = Daemon::start(dir, &[], &[]);
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| backplan(dir, &["status", "-c", "backplan.toml"]));
            let b = s.spawn(|| backplan(dir, &["backups", "-c", "backplan.toml", "--json"]));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(
            (a.code, b.code),
            (0, 0),
            "{}\n{}",
            a.transcript(),
            b.transcript()
        );
        d.wait_for("the backup after the restart", || {
            has(dir, "before-import", "completed")
        });
        let (code, _) = d.stop();
        assert_eq!(code, Some(0));
        let snaps = restic_snapshots(dir);
        assert_eq!(
            snaps.len(),
            1,
            "one snapshot, no duplicate, after signal {signal}"
        );
    }
}

#[test]
fn the_daily_slot_and_expiry_follow_a_moved_clock() {
    let tmp = prepared();
    let dir = tmp.path();
    let clock = dir.join("clock");
    // Moved atomically, as a clock should.
    let set = |t: &str| {
        std::fs::write(dir.join("clock.new"), t).unwrap();
        std::fs::rename(dir.join("clock.new"), &clock).unwrap();
    };
    set("2026-11-27T01:00:00Z");
    let d = Daemon::start(dir, &["--clock-file", "clock"], &[]);
    d.wait_for("the first apply", || has(dir, "before-import", "completed"));
    assert!(
        !statuses(dir).iter().any(|(n, _)| n.starts_with("daily")),
        "no daily before the slot"
    );

    // 02:00 passes: the daily backup of each of the four instances (two SQLite).
    set("2026-11-27T02:00:30Z");
    d.wait_for("the daily backups", || {
        statuses(dir)
            .iter()
            .filter(|(n, s)| n == "daily:2026-11-27" && s == "completed")
            .count()
            == 4
    });

    // Three days later (retention 3d): two missed slots recorded as skipped, today's taken,
    // and what passed its expiry (keeping the newest good backup of each instance) expired.
    set("2026-11-30T03:00:00Z");
    d.wait_for("catch-up and expiry", || {
        let s = statuses(dir);
        let count =
            |name: &str, status: &str| s.iter().filter(|(n, st)| n == name && st == status).count();
        count("daily:2026-11-28", "skipped") == 4
            && count("daily:2026-11-29", "skipped") == 4
            && count("daily:2026-11-30", "completed") == 4
            && count("daily:2026-11-27", "completed") == 0
            && count("before-import", "completed") == 0
    });
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

/// The descriptors the process `pid` holds.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn the_control_socket_bounds_requests_connections_and_idle_clients() {
    let tmp = prepared();
    let dir = tmp.path();
    let d = Daemon::start(dir, &[], &[]);
    d.wait_for("the first apply", || has(dir, "before-import", "completed"));
    let pid = d.child.as_ref().unwrap().id();
    let sock = dir.join("state/backplan.sock");

    // A request streamed without a newline is cut at the request size limit: an error
    // reply, the connection closed, and the daemon's memory does not follow the client.
    let limit = backplan::daemon::MAX_REQUEST_BYTES;
    let s = UnixStream::connect(&sock).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..64 {
            if w.write_all(&chunk).is_err() {
                return; // closed by the daemon
            }
        }
    });
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(
        line.contains("\"error\"") && line.contains(&format!("longer than {limit} bytes")),
        "{line}"
    );
    writer.join().unwrap();
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kb < 400 << 10, "peak memory {rss_kb} kB");

    // A flood of idle connections holds at most the connection limit of descriptors.
    let before = open_fds(pid);
    let idle: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = open_fds(pid);
    assert!(
        during <= before + 64,
        "{before} descriptors before, {during} with 200 idle clients"
    );
    drop(idle);
    let run = backplan(dir, &["status", "-c", "backplan.toml"]);
    assert_eq!(run.code, 0, "{}", run.transcript());

    // An idle client is closed after a while.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(std::io::Read::read(&mut s, &mut buf).unwrap(), 0);
    assert!(start.elapsed() < Duration::from_secs(15));

    // The daemon reads no file for a client: a plan is computed by the CLI, which validates
    // the file as the calling user; a request naming a file is refused.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(b"{\"command\":\"plan\",\"file\":\"/etc/backplan.toml\",\"name\":\"x\",\"text\":\"[storage.local]\\npassword_file = \\\"/etc/shadow\\\"\\n\",\"json\":false,\"at\":null,\"detailed_exitcode\":false,\"allow_mass_removal\":false}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert!(line.contains("\"error\""), "{line}");
    let run = backplan(dir, &["plan", "-c", "backplan.toml", "--detailed-exitcode"]);
    assert_eq!(run.code, 0, "applied already: {}", run.transcript());
    assert!(run.stdout.contains("No changes"), "{}", run.stdout);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_refused_mass_removal_is_approved_through_the_running_daemon() {
    let tmp = prepared();
    let dir = tmp.path();
    // The quickstart's directory instances only: the counts below are about them.
    let quickstart = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    let quickstart = quickstart[..quickstart.find("\n# A SQLite database").unwrap()].to_string();
    std::fs::write(dir.join("backplan.toml"), &quickstart).unwrap();
    append_config(
        dir,
        "[instances.s2]\ntype = \"sandbox\"\nversion = \"9.0\"\nsource = { kind = \"directory\", path = \"data/s2\" }",
    );
    let d = Daemon::start(dir, &[], &[]);
    let instances = || {
        let run = backplan(dir, &["status", "-c", "backplan.toml", "--json"]);
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s["name"].as_str().unwrap(),
                    s["state"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };
    d.wait_for("three instances", || {
        has(dir, "before-import", "completed")
            && instances().iter().filter(|s| s.ends_with(" ok")).count() == 3
    });

    // Two of the three instances removed from the file: the daemon refuses to forget them.
    let without = quickstart.replace(
        "[instances.contoso-sandbox]\ntype = \"sandbox\"\nversion = \"9.0\"\nsource = { kind = \"directory\", path = \"data/contoso-sandbox\" }\n",
        "",
    );
    assert_ne!(without, quickstart);
    std::fs::write(dir.join("backplan.toml"), &without).unwrap();
    d.wait_for("the refusal", || d.log().contains("mass-removal"));

    // `apply` without the flag shows the refusal and changes nothing.
    let run = backplan(dir, &["apply", "-c", "backplan.toml", "--auto-approve"]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout.contains("2 of 3 instances would be forgotten"),
        "{}",
        run.transcript()
    );
    assert_eq!(instances().len(), 3);

    // The daemon carries out only the plan that was approved: other actions are refused.
    let mut s = UnixStream::connect(dir.join("state/backplan.sock")).unwrap();
    s.write_all(b"{\"command\":\"apply\",\"allow_mass_removal\":true,\"approved\":\"forget instance.s2\\n\"}\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert!(line.contains("not the one shown"), "{line}");
    assert_eq!(instances().len(), 3);

    // Approved with the flag, without stopping the service: the daemon carries it out once.
    let run = backplan(
        dir,
        &[
            "apply",
            "-c",
            "backplan.toml",
            "--auto-approve",
            "--allow-mass-removal",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stdout.contains("instance.s2: forgotten"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Apply complete (by the daemon): 2 done, 0 failed."),
        "{}",
        run.stdout
    );
    assert_eq!(instances(), ["contoso ok"]);
    let run = backplan(dir, &["plan", "-c", "backplan.toml", "--detailed-exitcode"]);
    assert_eq!(run.code, 0, "nothing left to do: {}", run.transcript());
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

/// CPU time (user + system, in clock ticks) the process `pid` has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_descriptors_the_control_socket_backs_off_instead_of_spinning() {
    let tmp = prepared();
    let dir = tmp.path();
    let d = Daemon::start(dir, &[], &[]);
    d.wait_for("the first apply", || has(dir, "before-import", "completed"));
    let pid = d.child.as_ref().unwrap().id();
    let sock = dir.join("state/backplan.sock");
    // A few descriptors left: accepting fails with EMFILE while clients wait.
    let set_limit = |n: u64| {
        let lim = libc::rlimit {
            rlim_cur: n,
            rlim_max: 4096,
        };
        let r = unsafe {
            libc::prlimit(
                pid as libc::pid_t,
                libc::RLIMIT_NOFILE,
                &lim,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    set_limit(open_fds(pid) as u64 + 5);
    let waiting: Vec<UnixStream> = (0..40)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 50,
        "{used} ticks of CPU in 2 s while out of descriptors"
    );
    drop(waiting);
    set_limit(1024);
    let run = backplan(dir, &["status", "-c", "backplan.toml"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

/// systemd's notification socket, played by the test.
struct Notify(UnixDatagram);

impl Notify {
    fn bind(dir: &Path) -> (Notify, String) {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        (Notify(sock), path.to_str().unwrap().to_string())
    }

    /// The messages that arrive within `within`.
    fn collect(&self, within: Duration) -> Vec<String> {
        let until = Instant::now() + within;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            self.0
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.0.recv(&mut buf) {
                Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => break,
            }
        }
        out
    }

    /// Waits up to 30 s for a message containing `want`; returns the messages read.
    fn until(&self, want: &str) -> Vec<String> {
        let mut out = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            out.extend(self.collect(Duration::from_millis(200)));
            if out.iter().any(|m| m.contains(want)) {
                return out;
            }
        }
        panic!("no {want} from the daemon; got {out:?}");
    }
}

fn instance_status(dir: &Path, name: &str) -> serde_json::Value {
    let run = backplan(dir, &["status", "-c", "backplan.toml", "--json"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let all: Vec<serde_json::Value> = serde_json::from_value(v["instances"].clone()).unwrap();
    all.into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {}", run.stdout))
}

fn set_version(dir: &Path, instance: &str, version: &str, hook: &str) {
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    let header = format!("[instances.{instance}]\n");
    let start = text.find(&header).unwrap() + header.len();
    let end = text[start..]
        .find("\n[")
        .map(|i| start + i + 1)
        .unwrap_or(text.len());
    let body: String = text[start..end]
        .lines()
        .filter(|l| !l.starts_with("version") && !l.starts_with("on_update"))
        .map(|l| format!("{l}\n"))
        .collect();
    let hook = serde_json::to_string(&["/bin/sh", "-c", hook]).unwrap();
    let new = format!(
        "{}{header}version = \"{version}\"\non_update = {hook}\n{body}{}",
        &text[..start - header.len()],
        &text[end..]
    );
    std::fs::write(dir.join("new.toml"), new).unwrap();
    std::fs::rename(dir.join("new.toml"), dir.join("backplan.toml")).unwrap();
}

/// Running (a zombie waiting for its reaper is not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| !r.starts_with('Z')))
}

#[test]
fn ready_comes_before_the_first_reconcile_and_a_hung_one_starves_the_watchdog() {
    let tmp = prepared();
    let dir = tmp.path();
    let (notify, notify_path) = Notify::bind(dir);
    let d = Daemon::start(
        dir,
        &[],
        &[
            ("NOTIFY_SOCKET", &notify_path),
            ("WATCHDOG_USEC", "1000000"),
            // The first backup hangs for good.
            ("BACKPLAN_HANG_AFTER", "backup:started"),
        ],
    );
    let mut before = notify.until("READY=1");
    // The control socket answers during the first reconcile, and says so.
    d.wait_for("status during the first reconcile", || {
        let run = backplan(dir, &["status", "-c", "backplan.toml"]);
        run.code == 0 && run.stdout.contains("Daemon: reconciling (start)")
    });
    // No progress: the watchdog is no longer fed, and the log says why.
    d.wait_for("the watchdog to starve", || {
        d.log().contains("the watchdog is no longer fed")
    });
    // (What was queued before is drained first: the watchdog was fed until the hang.)
    before.extend(notify.collect(Duration::from_millis(100)));
    assert!(
        before.iter().any(|m| m.contains("WATCHDOG=1")),
        "{before:?}"
    );
    let after = notify.collect(Duration::from_millis(2500));
    assert!(
        !after.iter().any(|m| m.contains("WATCHDOG=1")),
        "a hung operation fed the watchdog: {after:?}"
    );
}

#[test]
fn hooks_run_without_secrets_their_output_logged_and_a_stop_waits_then_cuts_them_short() {
    let tmp = prepared();
    let dir = tmp.path();
    append_config(
        dir,
        "[storage.offsite]\nkind = \"azure\"\naccount = \"contoso\"\ncontainer = \"backplan\"\naccess_key_env = \"BACKPLAN_TEST_SECRET\"\npassword_file = \"offsite.key\"",
    );
    std::fs::write(dir.join("offsite.key"), "offsite repository password\n").unwrap();
    let (notify, notify_path) = Notify::bind(dir);
    let d = Daemon::start(
        dir,
        &[],
        &[
            ("NOTIFY_SOCKET", &notify_path),
            ("WATCHDOG_USEC", "1000000"),
            ("CREDENTIALS_DIRECTORY", "/run/credentials/backplan.service"),
            ("BACKPLAN_TEST_SECRET", "hunter2"),
        ],
    );
    d.wait_for("the first apply", || has(dir, "before-import", "completed"));

    // A hook that dumps its environment, writes to both streams, then works silently.
    set_version(
        dir,
        "contoso",
        "9.1",
        "env > hook-env.txt; echo hello from the hook; echo a complaint >&2; sleep 3",
    );
    d.wait_for("the hook", || dir.join("hook-env.txt").exists());
    // A silent hook is live work: the watchdog is still fed while it runs.
    let _ = notify.collect(Duration::from_millis(100));
    let during = notify.collect(Duration::from_millis(2000));
    assert!(
        during.iter().any(|m| m.contains("WATCHDOG=1")),
        "the watchdog starved during a running hook: {during:?}"
    );
    d.wait_for("the update", || {
        instance_status(dir, "contoso")["version"] == "9.1"
    });
    let env = std::fs::read_to_string(dir.join("hook-env.txt")).unwrap();
    assert!(env.contains("PATH="), "{env}");
    for hidden in [
        "BACKPLAN_TEST_SECRET",
        "hunter2",
        "CREDENTIALS_DIRECTORY",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
    ] {
        assert!(!env.contains(hidden), "{hidden} reached the hook:\n{env}");
    }
    let log = d.log();
    assert!(log.contains("hello from the hook"), "{log}");
    assert!(log.contains("a complaint"), "{log}");

    // A stop during a hook that does not end: waited for, then its whole group is killed;
    // the update is not done and the instance says why.
    set_version(
        dir,
        "contoso",
        "9.2",
        "sleep 300 & echo $! > hook-pid; wait",
    );
    d.wait_for("the second hook", || {
        std::fs::read_to_string(dir.join("hook-pid")).is_ok_and(|p| p.ends_with('\n'))
    });
    let pid: i32 = std::fs::read_to_string(dir.join("hook-pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (code, took) = d.stop();
    assert_eq!(code, Some(0));
    assert!(
        took >= Duration::from_secs(20) && took < Duration::from_secs(30),
        "the stop took {took:?}; the unit's TimeoutStopSec is 30 s"
    );
    assert!(!alive(pid), "the hook's child outlived the daemon");
    let contoso = instance_status(dir, "contoso");
    assert_eq!(contoso["version"], "9.1", "{contoso}");
    assert!(
        contoso["error"]
            .as_str()
            .is_some_and(|e| e.contains("cut short")),
        "{contoso}"
    );
}

#[test]
fn what_failed_is_tried_again_with_back_off_but_a_hook_only_after_a_change() {
    let tmp = prepared();
    let dir = tmp.path();
    let clock = dir.join("clock");
    let set = |t: &str| {
        std::fs::write(dir.join("clock.new"), t).unwrap();
        std::fs::rename(dir.join("clock.new"), &clock).unwrap();
    };
    set("2026-11-27T01:00:00Z");
    // The sandbox cannot be created: a file is in the way.
    std::fs::write(dir.join("data/contoso-sandbox"), "in the way").unwrap();
    let d = Daemon::start(dir, &["--clock-file", "clock"], &[]);
    d.wait_for("the first apply", || has(dir, "before-import", "completed"));
    d.wait_for("the failure, and the try planned", || {
        d.log().contains("is not a folder")
            && backplan(dir, &["status", "-c", "backplan.toml"])
                .stdout
                .contains(
                    "Daemon: waiting; next run 2026-11-27T01:01:00Z (to try again what failed)",
                )
    });
    std::fs::remove_file(dir.join("data/contoso-sandbox")).unwrap();

    // Not before the back-off (1 minute)...
    set("2026-11-27T01:00:40Z");
    std::thread::sleep(Duration::from_millis(2500));
    let sandbox = instance_status(dir, "contoso-sandbox");
    assert_eq!(sandbox["state"], "error");
    assert!(
        sandbox["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("creation failed")),
        "{sandbox}"
    );
    // ...but after it, on its own.
    set("2026-11-27T01:01:05Z");
    d.wait_for("the retry", || {
        instance_status(dir, "contoso-sandbox")["state"] == "ok"
    });

    // A failing hook runs once for the change that asked for it...
    set_version(dir, "contoso", "9.1", "echo run >> hook-runs; exit 1");
    let runs = || {
        std::fs::read_to_string(dir.join("hook-runs"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    d.wait_for("the hook", || {
        instance_status(dir, "contoso")["error"]
            .as_str()
            .is_some_and(|e| e.contains("on_update failed"))
    });
    // ...not again on the retry, the follow-up or the daily slot...
    set("2026-11-27T02:00:30Z");
    d.wait_for("the daily backups", || {
        statuses(dir)
            .iter()
            .filter(|(n, s)| n == "daily:2026-11-27" && s == "completed")
            .count()
            == 4 // the quickstart's four instances
    });
    assert!(d.log().contains("not run again on its own"), "{}", d.log());
    assert_eq!(runs(), 1, "the hook ran again on its own");
    // ...and again on a reload.
    d.signal(libc::SIGHUP);
    d.wait_for("the hook after the reload", || runs() == 2);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_silent_step_of_the_clock_is_seen_without_an_event() {
    let tmp = prepared();
    let dir = tmp.path();
    // The clock is read through a link: writes to the file it names are not seen by the
    // watcher, like a step of the wall clock.
    std::fs::create_dir(dir.join("t")).unwrap();
    let set = |t: &str| {
        std::fs::write(dir.join("t/new"), t).unwrap();
        std::fs::rename(dir.join("t/new"), dir.join("t/now")).unwrap();
    };
    set("2026-11-27T01:00:00Z");
    std::os::unix::fs::symlink("t/now", dir.join("clock")).unwrap();
    let d = Daemon::start(dir, &["--clock-file", "clock"], &[]);
    d.wait_for("the first apply", || has(dir, "before-import", "completed"));
    set("2026-11-27T02:00:30Z");
    d.wait_for("the daily backups", || {
        statuses(dir)
            .iter()
            .filter(|(n, s)| n == "daily:2026-11-27" && s == "completed")
            .count()
            == 4 // the quickstart's four instances
    });
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn verify_works_through_the_daemon_which_also_verifies_daily() {
    let tmp = prepared();
    let dir = tmp.path();
    let clock = dir.join("clock");
    let set = |t: &str| {
        std::fs::write(dir.join("clock.new"), t).unwrap();
        std::fs::rename(dir.join("clock.new"), &clock).unwrap();
    };
    set("2026-11-27T01:00:00Z");
    let d = Daemon::start(dir, &["--clock-file", "clock"], &[]);
    d.wait_for("the first apply", || has(dir, "before-import", "completed"));
    // Asked while the daemon holds the state.
    let run = backplan(dir, &["verify", "-c", "backplan.toml"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(run.stdout.contains("storage local: OK"), "{}", run.stdout);
    // `schedule.verify`, after the daily backups, with its outcome in `status`.
    set("2026-11-27T02:00:30Z");
    d.wait_for("the daily verification in status", || {
        let run = backplan(dir, &["status", "-c", "backplan.toml"]);
        run.stdout.lines().any(|l| {
            l.starts_with("Last verify: 2026-11-27T02:00:30Z: OK") && l.contains("5% of the data")
        })
    });
    assert!(d.log().contains("verify: storage local: OK"), "{}", d.log());
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_moved_state_dir_waits_for_the_next_start_and_nothing_is_mixed() {
    let tmp = prepared();
    let dir = tmp.path();
    let d = Daemon::start(dir, &[], &[]);
    d.wait_for("the first apply", || has(dir, "before-import", "completed"));
    // The file moves the state (and with it the default repository and keys) and asks for a
    // new backup in the same save.
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    std::fs::write(
        dir.join("backplan.toml"),
        text.replace("state_dir = \"state\"", "state_dir = \"elsewhere\"")
            + "\n[instances.contoso.backups.after-move]\nlabel = \"After the move\"\n",
    )
    .unwrap();
    // The CLI now looks where the file says; the daemon still answers on its socket.
    let ask = |command: &str| {
        let mut s = UnixStream::connect(dir.join("state/backplan.sock")).unwrap();
        s.write_all(format!("{{\"command\":\"{command}\",\"json\":true}}\n").as_bytes())
            .unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str::<serde_json::Value>(&line).unwrap()
    };
    d.wait_for("the refusal in status", || {
        ask("status")["stderr"]
            .as_str()
            .is_some_and(|e| e.contains("take effect at the next start"))
    });
    std::thread::sleep(Duration::from_millis(800));
    let backups = ask("backups");
    assert!(
        !backups["stdout"].as_str().unwrap().contains("after-move"),
        "the new file was applied with the old state: {backups}"
    );
    assert!(
        !dir.join("elsewhere").exists(),
        "nothing made at the new place"
    );
    assert_eq!(restic_snapshots(dir).len(), 1);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

/// `plan` with the daemon running gets the records from it (one compact JSON line of records,
/// not an answer holding them as text) and plans exactly what it plans without a daemon.
#[test]
fn plan_through_the_daemon_is_the_plan_without_it() {
    let tmp = prepared();
    let dir = tmp.path();
    assert_eq!(apply(dir).code, 0);
    let plan = |dir: &Path| {
        let run = backplan(
            dir,
            &[
                "plan",
                "-c",
                "backplan.toml",
                "--json",
                "--at",
                "2026-12-24T12:00:00Z",
            ],
        );
        assert_eq!(run.code, 0, "{}", run.transcript());
        run.stdout
    };
    let alone = plan(dir);
    let d = Daemon::start(dir, &[], &[]);
    d.wait_for("the first reconcile", || d.log().contains("nothing to do"));
    let mut s = UnixStream::connect(dir.join("state/backplan.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"{\"command\":\"recorded\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
    let backups = reply["recorded"]["backups"].as_object().unwrap();
    assert_eq!(backups.len(), backups_json(dir).len(), "{reply}");
    assert_eq!(plan(dir), alone);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}
