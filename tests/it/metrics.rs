//! The metrics of a real daemon on `metrics_listen`: a real scrape checked by `promtool check
//! metrics`, and the listener's bounds. With `CI=true` a missing `promtool` fails the test;
//! elsewhere the test says so loudly and stops (`scripts/install-test-deps.sh` installs it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::daemon::{Daemon, has, prepared};
use crate::helpers::*;

/// Whether `tool` is installed; outside CI a missing one skips the test loudly.
pub(crate) fn tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{tool} is missing: run scripts/install-test-deps.sh");
        }
        eprintln!("SKIPPED: {tool} is missing (scripts/install-test-deps.sh installs it)");
    }
    found
}

/// A daemon of the quickstart example serving `metrics_listen` on a port of its choosing,
/// with its first reconcile done; and that port.
pub(crate) fn daemon_with_metrics(dir: &Path) -> (Daemon, u16) {
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    let text = text.replace(
        "state_dir = \"state\"",
        "state_dir = \"state\"\nmetrics_listen = \"127.0.0.1:0\"",
    );
    std::fs::write(dir.join("backplan.toml"), text).unwrap();
    let d = Daemon::start(dir, &[], &[]);
    d.wait_for("the first apply", || has(dir, "before-import", "completed"));
    let mut port = 0;
    d.wait_for("the metrics address in the log", || {
        port = d
            .log()
            .split("metrics on http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        port != 0
    });
    (d, port)
}

/// One raw HTTP request: the status code, the head and the body.
pub(crate) fn http(port: u16, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

pub(crate) fn get(port: u16, path: &str) -> (u16, String, String) {
    http(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
}

/// The value of the sample `name{labels}` (labels exactly as exported), if any.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub(crate) fn promtool_check(metrics: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_piped();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Lint problems (naming conventions) are printed even with a zero exit status.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.trim().is_empty(), "promtool check metrics: {said}");
}

trait Piped {
    fn output_piped(&mut self) -> std::process::Child;
}
impl Piped for Command {
    fn output_piped(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

#[test]
fn a_real_scrape_passes_promtool_and_follows_backups_failures_and_the_file() {
    if !tool("promtool") {
        return;
    }
    let tmp = prepared();
    let dir = tmp.path();
    let (d, port) = daemon_with_metrics(dir);
    // The repository is measured after the run that wrote the backup record ends: a scrape
    // right after the record may come first (seen once in CI).
    d.wait_for("the repository measured", || {
        value(
            &get(port, "/metrics").2,
            "backplan_repository_size_bytes{storage=\"local\"}",
        )
        .is_some()
    });

    let (status, head, metrics) = get(port, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    promtool_check(&metrics);
    let ts = value(
        &metrics,
        "backplan_last_successful_backup_timestamp_seconds{instance_name=\"contoso\",kind=\"on-demand\"}",
    )
    .unwrap_or_else(|| panic!("no last successful backup of contoso:\n{metrics}"));
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - 600.0..=now + 1.0).contains(&ts), "{ts} vs {now}");
    assert_eq!(
        value(
            &metrics,
            "backplan_backups{instance_name=\"contoso\",kind=\"on-demand\",status=\"completed\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        value(
            &metrics,
            "backplan_operations_total{operation=\"backup\",result=\"success\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(
        value(
            &metrics,
            "backplan_operation_duration_seconds_count{operation=\"backup\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(
        value(
            &metrics,
            "backplan_backup_read_bytes_total{instance_name=\"contoso\"}"
        )
        .is_some_and(|n| n >= 5.0), // "hello"
        "{metrics}"
    );
    assert!(
        value(
            &metrics,
            "backplan_repository_size_bytes{storage=\"local\"}"
        )
        .is_some_and(|n| n > 1000.0),
        "{metrics}"
    );
    assert_eq!(
        value(&metrics, "backplan_config_last_reload_successful"),
        Some(1.0)
    );
    assert_eq!(value(&metrics, "backplan_plan_refusals"), Some(0.0));
    assert!(
        metrics.contains("backplan_build_info{version=\""),
        "{metrics}"
    );

    // The log tells the story: one line at the start and one at the end of each operation,
    // with the instance, the backup id, the duration and the bytes.
    let id = backup_id(dir, "before-import");
    let log = d.log();
    let line = |what: &str| {
        log.lines()
            .find(|l| l.contains(what) && l.contains(&id))
            .unwrap_or_else(|| panic!("no `{what}` line for {id}:\n{log}"))
            .to_string()
    };
    assert!(line("backup started").contains("contoso"));
    let end = line("backup finished");
    for field in ["contoso", "duration_s", "bytes", "bytes_added"] {
        assert!(end.contains(field), "{field} missing: {end}");
    }

    // A verification (asked of the daemon) is counted and its outcome kept.
    assert_eq!(backplan(dir, &["verify", "-c", "backplan.toml"]).code, 0);
    let (_, _, metrics) = get(port, "/metrics");
    assert_eq!(value(&metrics, "backplan_last_verify_success"), Some(1.0));
    assert_eq!(
        value(
            &metrics,
            "backplan_operations_total{operation=\"verify\",result=\"success\"}"
        ),
        Some(1.0),
        "{metrics}"
    );

    // A backup that fails shows as failed at the next scrape.
    std::fs::remove_dir_all(dir.join("data/contoso")).unwrap();
    std::fs::write(dir.join("data/contoso"), "not a folder").unwrap();
    append_config(dir, "[instances.contoso.backups.b2]\nlabel = \"fails\"");
    d.wait_for("b2 failed", || has(dir, "b2", "failed"));
    let (_, _, metrics) = get(port, "/metrics");
    promtool_check(&metrics);
    assert_eq!(
        value(
            &metrics,
            "backplan_backups{instance_name=\"contoso\",kind=\"on-demand\",status=\"failed\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
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
            "backplan_last_backup_success{instance_name=\"contoso\",kind=\"on-demand\"}"
        ),
        Some(0.0),
        "{metrics}"
    );

    // A rejected file: the last reload did not succeed; its time stays the last good one.
    let loaded = value(
        &metrics,
        "backplan_config_last_reload_success_timestamp_seconds",
    )
    .unwrap();
    append_config(dir, "[instances.contoso.backups.b3]\nlable = \"typo\"");
    d.wait_for("the rejected file in the metrics", || {
        value(
            &get(port, "/metrics").2,
            "backplan_config_last_reload_successful",
        ) == Some(0.0)
    });
    let (_, _, metrics) = get(port, "/metrics");
    assert_eq!(
        value(
            &metrics,
            "backplan_config_last_reload_success_timestamp_seconds"
        ),
        Some(loaded)
    );
    // A production instance removed: refused, and counted.
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    let text = text.replace("lable = \"typo\"", "label = \"ok\"").replace(
        "[instances.shop]\ntype = \"production\"\nversion = \"1.0\"\nsource = { kind = \"sqlite\", path = \"data/shop.db\" }\n",
        "",
    );
    assert!(!text.contains("[instances.shop]"));
    std::fs::write(dir.join("backplan.toml"), text).unwrap();
    d.wait_for("the refusal in the metrics", || {
        let m = get(port, "/metrics").2;
        value(&m, "backplan_config_last_reload_successful") == Some(1.0)
            && value(&m, "backplan_plan_refusals") == Some(1.0)
    });
    promtool_check(&get(port, "/metrics").2);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn the_listener_is_read_only_and_bounded() {
    let tmp = prepared();
    let dir = tmp.path();
    let (d, port) = daemon_with_metrics(dir);
    let (status, head, _) = http(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, 405, "{head}");
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    assert_eq!(http(port, b"DELETE / HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(get(port, "/../../etc/passwd").0, 404);
    assert_eq!(get(port, "/nope").0, 404);
    assert_eq!(http(port, b"GET /\r\n\r\n").0, 400);
    let (status, head, body) = http(port, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, 200, "{head}");
    assert!(body.is_empty());
    // A head longer than the limit is refused without reading it all.
    let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 64 * 1024));
    big.extend(b"\r\n\r\n");
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(&big);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out}");
    // A client that sends nothing is answered 408 and closed after the timeout.
    let started = std::time::Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // Idle clients beyond the connection limit do not stop the daemon from answering once
    // they are gone, and never stop the control socket.
    let idle: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    assert_eq!(backplan(dir, &["status", "-c", "backplan.toml"]).code, 0);
    drop(idle);
    assert_eq!(get(port, "/metrics").0, 200);

    // A reload that moves `metrics_listen` serves at the new address, and no longer at the old.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let new_port = free.local_addr().unwrap().port();
    drop(free);
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    std::fs::write(
        dir.join("backplan.toml"),
        text.replace("127.0.0.1:0", &format!("127.0.0.1:{new_port}")),
    )
    .unwrap();
    d.wait_for("the new address", || {
        TcpStream::connect(("127.0.0.1", new_port)).is_ok()
    });
    assert_eq!(get(new_port, "/metrics").0, 200);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_taken_metrics_address_never_stops_backups_and_is_tried_again_at_a_reload() {
    let tmp = prepared();
    let dir = tmp.path();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    std::fs::write(
        dir.join("backplan.toml"),
        text.replace(
            "state_dir = \"state\"",
            &format!("state_dir = \"state\"\nmetrics_listen = \"{port}\""),
        ),
    )
    .unwrap();
    let d = Daemon::start(dir, &[], &[]);
    d.wait_for("the first apply", || has(dir, "before-import", "completed"));
    assert!(
        d.log()
            .contains(&format!("metrics_listen 127.0.0.1:{port}")),
        "{}",
        d.log()
    );
    drop(taken);
    append_config(dir, "# a change, so the file is read again");
    d.wait_for("the metrics served after the reload", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert_eq!(get(port, "/metrics").0, 200);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}
