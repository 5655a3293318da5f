//! `[notify]` with the real daemon: every terminal event received on loopback by a command
//! (stdin to a file), a webhook and a ping receiver played by the test; a backup killed
//! mid-way seen as one failure then one success in the notifications and the metrics; and
//! receivers that hang or refuse never delaying a backup.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{Daemon, has, prepared};
use crate::helpers::*;

/// The secret parts of the receivers' URLs: never in the log.
const HOOK_TOKEN: &str = "T0KEN-s3cr3t-hook";
const CHECK_ID: &str = "c0ffee-check-id";

/// One request received: method, path, body.
type Request = (String, String, String);

/// An HTTP receiver on loopback: records every request; answers 200, or (hanging) never.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Request>>>,
    /// Connections held open without an answer (hanging mode).
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Receiver {
    fn start(hang: bool) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (g, h) = (got.clone(), held.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let Some(req) = read_request(&conn) else {
                    continue;
                };
                g.lock().unwrap().push(req);
                if hang {
                    h.lock().unwrap().push(conn);
                } else {
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        });
        Receiver {
            port,
            got,
            _held: held,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.got.lock().unwrap().clone()
    }

    /// The JSON events POSTed to the webhook path.
    fn events(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|(m, p, _)| m == "POST" && p == &format!("/hook/{HOOK_TOKEN}"))
            .map(|(_, _, b)| serde_json::from_str(b).expect("the webhook body is JSON"))
            .collect()
    }

    /// The pings, in order: `start`, `success` or `fail`.
    fn pings(&self) -> Vec<String> {
        let base = format!("/ping/{CHECK_ID}");
        self.requests()
            .iter()
            .filter_map(|(_, p, _)| {
                let rest = p.strip_prefix(&base)?;
                Some(match rest {
                    "" => "success".to_string(),
                    r => r.trim_start_matches('/').to_string(),
                })
            })
            .collect()
    }
}

fn read_request(conn: &TcpStream) -> Option<Request> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((method, path, String::from_utf8_lossy(&body).into_owned()))
}

/// A file only backplan may read (a secret), holding `text`.
fn secret(dir: &Path, name: &str, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(dir.join(name), text).unwrap();
    std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `[notify]` with a command that appends its stdin to `events.jsonl`, a webhook and a ping
/// URL on `port` (either may be left out).
fn notify_table(dir: &Path, command: &str, hook_port: Option<u16>, ping_port: Option<u16>) {
    let mut t = format!("[notify]\ncommand = [\"sh\", \"-c\", {command:?}]\n");
    if let Some(p) = hook_port {
        secret(
            dir,
            "webhook.url",
            &format!("http://127.0.0.1:{p}/hook/{HOOK_TOKEN}\n"),
        );
        t += "webhook_url_file = \"webhook.url\"\n";
    }
    if let Some(p) = ping_port {
        secret(
            dir,
            "ping.url",
            &format!("http://127.0.0.1:{p}/ping/{CHECK_ID}"),
        );
        t += "ping_url_file = \"ping.url\"\n";
    }
    append_config(dir, &t);
}

const TO_FILE: &str = "cat >> events.jsonl; echo >> events.jsonl";

/// The events the command received (one JSON object per line).
fn command_events(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("the command gets JSON"))
        .collect()
}

fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

fn count(events: &[Value], event: &str, kind: Option<&str>) -> usize {
    events
        .iter()
        .filter(|e| e["event"] == event && kind.is_none_or(|k| e["kind"] == k))
        .count()
}

fn edit(dir: &Path, from: &str, to: &str) {
    let path = dir.join("backplan.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from} in the file");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn every_terminal_event_reaches_the_command_the_webhook_and_the_pings() {
    let tmp = prepared();
    let dir = tmp.path();
    let rx = Receiver::start(false);
    notify_table(dir, TO_FILE, Some(rx.port), Some(rx.port));
    let clock = dir.join("clock");
    let set = |t: &str| {
        std::fs::write(dir.join("clock.new"), t).unwrap();
        std::fs::rename(dir.join("clock.new"), &clock).unwrap();
    };
    set("2026-11-27T01:00:00Z");
    let mut d = Daemon::start(dir, &["--clock-file", "clock"], &[]);
    let both = |event: &str, kind: Option<&str>, n: usize| {
        count(&command_events(dir), event, kind) >= n && count(&rx.events(), event, kind) >= n
    };

    // An on-demand backup completed: the event's documented shape.
    d.wait_for("the first backup's event", || {
        both("backup_completed", Some("on-demand"), 1)
    });
    let e = command_events(dir)
        .into_iter()
        .find(|e| e["event"] == "backup_completed")
        .unwrap();
    let id = backup_by_key(dir, "before-import")["id"].clone();
    assert_eq!(e["format_version"], 1);
    assert_eq!(e["outcome"], "success");
    assert_eq!(e["instance"], "contoso");
    assert_eq!(e["backup_id"], id);
    assert_eq!(e["label"], "Before solution import");
    assert_eq!(e["address"], "backup.contoso/before-import");
    assert!(
        e["time"].as_str().unwrap().starts_with("2026-11-27T01:00:"),
        "the daemon's clock: {e}"
    );
    assert!(
        e["duration_seconds"].as_f64().is_some_and(|s| s >= 0.0),
        "{e}"
    );
    assert!(e["bytes"].as_u64().is_some_and(|b| b >= 5), "{e}");
    assert!(e["message"].is_string() && e["host"].is_string(), "{e}");
    assert!(rx.events().contains(&e), "the webhook gets the same JSON");
    assert!(rx.pings().is_empty(), "no daily run yet: {:?}", rx.pings());

    // The daily slot passes: four daily backups, one start ping and one success ping.
    set("2026-11-27T02:00:30Z");
    d.wait_for("the daily backups' events", || {
        both("backup_completed", Some("daily"), 4)
    });
    d.wait_for("the success ping", || {
        rx.pings().contains(&"success".to_string())
    });
    assert_eq!(rx.pings(), ["start", "success"]);

    // Stopped over a slot: the missed one is recorded skipped, today's is taken, the run
    // pings start then fail (a daily slot was skipped).
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
    set("2026-11-29T02:00:30Z");
    d = Daemon::start(dir, &["--clock-file", "clock"], &[]);
    d.wait_for("the skipped slots' events", || {
        both("daily_skipped", Some("daily"), 4)
    });
    d.wait_for("the fail ping", || rx.pings().len() >= 4);
    assert_eq!(rx.pings(), ["start", "success", "start", "fail"]);
    let skipped = command_events(dir)
        .into_iter()
        .find(|e| e["event"] == "daily_skipped")
        .unwrap();
    assert_eq!(skipped["outcome"], "skipped");
    assert!(
        skipped["message"].as_str().unwrap().contains("missed"),
        "{skipped}"
    );

    // A backup that fails (its `before_backup` fails).
    edit(
        dir,
        "source = { kind = \"sqlite\", path = \"data/shop.db\" }",
        "source = { kind = \"sqlite\", path = \"data/shop.db\" }\nbefore_backup = [\"false\"]",
    );
    append_config(
        dir,
        "[instances.shop.backups.broken]\nlabel = \"Quiesce fails\"",
    );
    d.wait_for("the failed backup's event", || {
        both("backup_failed", Some("on-demand"), 1)
    });
    let failed = rx
        .events()
        .into_iter()
        .find(|e| e["event"] == "backup_failed")
        .unwrap();
    assert_eq!(failed["outcome"], "failure");
    assert_eq!(failed["instance"], "shop");
    assert_eq!(failed["label"], "Quiesce fails");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("before_backup"),
        "{failed}"
    );

    // A restore that completes, then one that fails (its `before_restore` fails).
    append_config(
        dir,
        "[restores.r1]\nfrom = \"contoso/before-import\"\nto = \"contoso-sandbox\"",
    );
    d.wait_for("the restore's event", || both("restore_completed", None, 1));
    let restored = rx
        .events()
        .into_iter()
        .find(|e| e["event"] == "restore_completed")
        .unwrap();
    assert_eq!(restored["instance"], "contoso-sandbox");
    assert_eq!(restored["backup_id"], id);
    assert_eq!(restored["address"], "restore.r1");
    edit(
        dir,
        "source = { kind = \"directory\", path = \"data/contoso-sandbox\" }",
        "source = { kind = \"directory\", path = \"data/contoso-sandbox\" }\nbefore_restore = [\"false\"]",
    );
    append_config(
        dir,
        "[restores.r2]\nfrom = \"contoso/before-import\"\nto = \"contoso-sandbox\"",
    );
    d.wait_for("the failed restore's event", || {
        both("restore_failed", None, 1)
    });
    let e = rx
        .events()
        .into_iter()
        .find(|e| e["event"] == "restore_failed")
        .unwrap();
    assert_eq!(
        (e["outcome"].as_str(), e["address"].as_str()),
        (Some("failure"), Some("restore.r2"))
    );

    // A verify that finds a completed backup's snapshot gone: `verify_failed`, and `/fail`.
    let snapshots = dir.join("state/repository/snapshots");
    let snap = std::fs::read_dir(&snapshots)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(snap).unwrap();
    let pings = rx.pings().len();
    let run = backplan(dir, &["verify", "-c", "backplan.toml"]);
    assert_ne!(run.code, 0, "{}", run.transcript());
    d.wait_for("the verify failure's event", || {
        both("verify_failed", None, 1)
    });
    d.wait_for("its fail ping", || rx.pings().len() > pings);
    assert_eq!(rx.pings().last().map(String::as_str), Some("fail"));

    // The file rejected: its diagnostics in the event.
    std::fs::write(dir.join("backplan.toml"), "[instances.x\n").unwrap();
    d.wait_for("the rejection's event", || both("config_rejected", None, 1));
    let e = rx
        .events()
        .into_iter()
        .find(|e| e["event"] == "config_rejected")
        .unwrap();
    assert!(e["message"].as_str().unwrap().contains("syntax"), "{e}");

    // Each event once on each path, and the secrets never in the log.
    let (cmd, hook) = (names(&command_events(dir)), names(&rx.events()));
    assert_eq!(cmd, hook, "the command and the webhook get the same events");
    let log = d.log();
    assert!(
        !log.contains(HOOK_TOKEN) && !log.contains(CHECK_ID),
        "{log}"
    );
    assert!(
        !log.contains("notifications:"),
        "no delivery failed:\n{log}"
    );
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

/// The value of the sample `series` (exactly as exported) in a scrape.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The "done when": a backup killed mid-way shows as failed within one scrape and one
/// notification, and its retry later shows as a success in both.
#[test]
fn a_backup_killed_midway_is_one_failure_then_one_success_in_notifications_and_metrics() {
    let tmp = prepared();
    let dir = tmp.path();
    let rx = Receiver::start(false);
    notify_table(dir, TO_FILE, Some(rx.port), None);
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    std::fs::write(
        dir.join("backplan.toml"),
        text.replace(
            "state_dir = \"state\"",
            "state_dir = \"state\"\nmetrics_listen = \"127.0.0.1:0\"",
        ),
    )
    .unwrap();

    // SIGKILL in the middle of the first backup (the engine about to read the data).
    let mut d = Daemon::start(dir, &[], &[("BACKPLAN_FAILPOINT", "backup.before-engine")]);
    let started = Instant::now();
    while d.running() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "killed at the fail point"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(command_events(dir).is_empty(), "nothing ended yet");
    drop(d);

    // Restarted: recovery finds it interrupted (failed, notified), then takes it again.
    let d = Daemon::start(dir, &[], &[]);
    d.wait_for("the retry", || has(dir, "before-import", "completed"));
    let id = backup_by_key(dir, "before-import")["id"].clone();
    let of_it = |events: Vec<Value>| -> Vec<(String, String)> {
        events
            .iter()
            .filter(|e| e["backup_id"] == id)
            .map(|e| {
                (
                    e["event"].as_str().unwrap().into(),
                    e["outcome"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let want = vec![
        ("backup_failed".to_string(), "failure".to_string()),
        ("backup_completed".to_string(), "success".to_string()),
    ];
    d.wait_for("both notifications", || {
        of_it(command_events(dir)).len() >= 2 && of_it(rx.events()).len() >= 2
    });
    assert_eq!(of_it(command_events(dir)), want);
    assert_eq!(of_it(rx.events()), want);
    let failed = command_events(dir)
        .into_iter()
        .find(|e| e["event"] == "backup_failed")
        .unwrap();
    assert!(
        failed["message"].as_str().unwrap().contains("interrupted"),
        "{failed}"
    );

    // One scrape shows both: one failed backup, then one that succeeded.
    let mut port = 0;
    d.wait_for("the metrics address", || {
        port = d
            .log()
            .rsplit("metrics on http://127.0.0.1:")
            .next()
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        port != 0
    });
    let (status, _, metrics) = crate::metrics::get(port, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        value(
            &metrics,
            "backplan_operations_total{operation=\"backup\",result=\"failure\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(
            &metrics,
            "backplan_operations_total{operation=\"backup\",result=\"success\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(
            &metrics,
            "backplan_last_backup_success{instance_name=\"contoso\",kind=\"on-demand\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

/// Seconds the backup `key` took, from the daemon's `backup finished` log line.
fn backup_seconds(log: &str, id: &str) -> f64 {
    log.lines()
        .find(|l| l.contains("backup finished") && l.contains(id))
        .and_then(|l| l.split("duration_s=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no `backup finished` line for {id}:\n{log}"))
}

#[test]
fn a_hanging_receiver_never_delays_a_backup_nor_the_control_socket() {
    let tmp = prepared();
    let dir = tmp.path();
    // A webhook that accepts and never answers.
    let rx = Receiver::start(true);
    notify_table(dir, TO_FILE, Some(rx.port), None);
    let d = Daemon::start(dir, &[], &[]);
    d.wait_for("the first backup", || {
        has(dir, "before-import", "completed")
    });
    let first = backup_seconds(&d.log(), &backup_id(dir, "before-import"));
    d.wait_for("the webhook to hang", || !rx.requests().is_empty());

    // Delivery is stuck (the webhook's answer never comes): more backups are taken as fast,
    // and the control socket answers at once.
    for key in ["second", "third"] {
        append_config(
            dir,
            &format!("[instances.contoso.backups.{key}]\nlabel = \"{key}\""),
        );
        // Blocked, it would wait for the webhook's 4 tries of 10 s: 47 s. On a loaded
        // machine a backup alone can take 20 s.
        let asked = Instant::now();
        while !has(dir, key, "completed") {
            assert!(
                asked.elapsed() < Duration::from_secs(60),
                "{key}:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let took = backup_seconds(&d.log(), &backup_id(dir, key));
        assert!(
            took < first + 5.0 && asked.elapsed() < Duration::from_secs(30),
            "{key} took {took:.1}s (the first {first:.1}s), {:?} after the edit",
            asked.elapsed()
        );
    }
    let asked = Instant::now();
    let run = backplan(dir, &["status", "-c", "backplan.toml"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "status took {:?}",
        asked.elapsed()
    );
    // Meanwhile delivery was stuck on the first event: the webhook and the command saw no
    // other.
    let first_id = backup_id(dir, "before-import");
    let hook = rx.events();
    assert!(
        !hook.is_empty() && hook.iter().all(|e| e["backup_id"] == first_id.as_str()),
        "{hook:?}"
    );
    assert_eq!(names(&command_events(dir)), ["backup_completed"]);
    let (code, took) = d.stop();
    assert_eq!(code, Some(0));
    assert!(
        took < Duration::from_secs(10),
        "a stuck delivery does not hold the stop: {took:?}"
    );
}

#[test]
fn a_closed_port_is_tried_again_then_logged_once_without_the_secret() {
    let tmp = prepared();
    let dir = tmp.path();
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    notify_table(dir, "exit 3", Some(port), None);
    let d = Daemon::start(dir, &[], &[]);
    d.wait_for("the first backup", || {
        has(dir, "before-import", "completed")
    });
    let first = backup_seconds(&d.log(), &backup_id(dir, "before-import"));
    assert!(first < 30.0, "{first}");
    // 1 + 2 + 4 s of back-off between the four tries.
    let start = Instant::now();
    while !d.log().contains("to the webhook:") {
        assert!(start.elapsed() < Duration::from_secs(40), "{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = d.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("notifications: backup_completed to the webhook"))
        .collect();
    assert_eq!(lines.len(), 1, "logged once:\n{log}");
    assert!(
        lines[0].contains(&format!("http://127.0.0.1:{port} failed after 4 tries")),
        "{}",
        lines[0]
    );
    assert!(
        !log.contains(HOOK_TOKEN),
        "the URL's path is a secret:\n{log}"
    );
    assert!(
        log.contains(
            "notifications: backup_completed to the command: sh exited with exit status: 3"
        ),
        "{log}"
    );
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}
