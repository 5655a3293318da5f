//! External storage that fails: an upload cut off half-way, wrong credentials, an endpoint
//! that stalls or trickles. A TCP proxy of the test's own ([`Proxy`]) stands between backplan
//! and the emulator (moto keeps its buckets in memory: the emulator itself is never stopped).
//! The stock `restic` checks the repository afterwards.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::helpers::*;
use crate::storage::*;
use crate::trees::*;

/// What the proxy does with the bytes it is given.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Forwards everything both ways.
    Pass,
    /// Forwards what is sent to the server until the budget is spent, then cuts the
    /// connection (and every later one at its first bytes).
    Cut,
    /// Takes what is sent and never answers.
    Stall,
    /// Forwards one byte every 50 ms each way.
    Trickle,
}

struct Shared {
    mode: Mutex<Mode>,
    /// Bytes to the server still allowed in `Cut` mode.
    budget: AtomicUsize,
    /// Connections accepted.
    connections: AtomicUsize,
    stop: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

/// A TCP proxy on loopback in front of an emulator, on threads of the test.
struct Proxy {
    port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    fn start(endpoint: &str) -> Proxy {
        let upstream = endpoint
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Pass),
            budget: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                {
                    let mut open = s.open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up = s.clone();
                std::thread::spawn(move || pump(client, server, &up, true));
                let down = s.clone();
                std::thread::spawn(move || pump(s2, c2, &down, false));
            }
        });
        Proxy { port, shared }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    fn cut_after(&self, bytes: usize) {
        self.shared.budget.store(bytes, Ordering::SeqCst);
        self.set(Mode::Cut);
    }

    fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for s in self.shared.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` as the mode says; `to_server` is the direction of uploads.
fn pump(mut from: TcpStream, mut to: TcpStream, s: &Shared, to_server: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    let cut = |a: &TcpStream, b: &TcpStream| {
        let _ = a.shutdown(Shutdown::Both);
        let _ = b.shutdown(Shutdown::Both);
    };
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        if s.stop.load(Ordering::SeqCst) {
            return cut(&from, &to);
        }
        let mode = *s.mode.lock().unwrap();
        let sent = match mode {
            Mode::Pass => to.write_all(&buf[..n]),
            Mode::Cut if !to_server => to.write_all(&buf[..n]),
            Mode::Cut => {
                let left = s
                    .budget
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                        Some(b.saturating_sub(n))
                    })
                    .unwrap();
                if left >= n {
                    to.write_all(&buf[..n])
                } else {
                    // Half of the request reaches the server, then the line goes dead.
                    let _ = to.write_all(&buf[..left]);
                    return cut(&from, &to);
                }
            }
            // The request is taken in and nothing ever comes back.
            Mode::Stall => Ok(()),
            Mode::Trickle => buf[..n].iter().try_for_each(|b| {
                std::thread::sleep(Duration::from_millis(50));
                to.write_all(std::slice::from_ref(b))
            }),
        };
        if sent.is_err() {
            return cut(&from, &to);
        }
    }
}

/// The keys of the objects in an S3 bucket (straight from the emulator).
fn objects(endpoint: &str, bucket: &str) -> Vec<String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", &format!("{endpoint}/{bucket}")])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(body.contains("ListBucketResult"), "{body}");
    body.split("<Key>")
        .skip(1)
        .map(|s| s.split("</Key>").next().unwrap().to_string())
        .collect()
}

/// The stock restic on the repository in the bucket, straight at the emulator.
fn restic(endpoint: &str, bucket: &str, dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("restic")
        .arg("-r")
        .arg(format!("s3:{endpoint}/{bucket}/repo"))
        .arg("--password-file")
        .arg(dir.join("archive.key"))
        .arg("--no-cache")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .expect("restic is installed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A quickstart whose storage `archive` is the bucket behind `proxy`, with `contoso` holding
/// 6 MiB of incompressible data (so that a pack upload is large enough to cut in the middle).
fn behind_proxy(bucket: &str, proxy: &Proxy) -> tempfile::TempDir {
    let tmp = quickstart_with(&format!(
        "[storage.archive]\nkind = \"s3\"\nbucket = \"{bucket}\"\npath = \"repo\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\naccess_key_id = \"testing\"\nsecret_access_key_file = \"s3.secret\"\npassword_file = \"archive.key\"",
        proxy.url()
    ));
    let dir = tmp.path();
    write_secret(&dir.join("s3.secret"), "testing-secret\n");
    std::fs::write(dir.join("data/contoso/big.bin"), random_bytes(6 << 20)).unwrap();
    tmp
}

/// The S3 emulator, a fresh bucket named after `stem`, a [`Proxy`] in front of it and a
/// quickstart whose storage `archive` is that bucket behind the proxy ([`behind_proxy`]);
/// `None` when there is no emulator (the test is skipped).
struct Proxied {
    s3: String,
    bucket: String,
    proxy: Proxy,
    tmp: tempfile::TempDir,
}

fn proxied(stem: &str) -> Option<Proxied> {
    let s3 = emulator("s3", "BACKPLAN_TEST_S3")?;
    let bucket = unique(stem);
    create_bucket(&s3, &bucket);
    let proxy = Proxy::start(&s3);
    let tmp = behind_proxy(&bucket, &proxy);
    Some(Proxied {
        s3,
        bucket,
        proxy,
        tmp,
    })
}

/// [`proxied`], then a first `apply` with everything passing (the instances and the local
/// backup).
fn proxied_and_applied(stem: &str) -> Option<Proxied> {
    let p = proxied(stem)?;
    let run = apply(p.tmp.path());
    assert_eq!(run.code, 0, "{}", run.transcript());
    Some(p)
}

#[test]
fn an_upload_cut_off_half_way_fails_leaves_the_repository_sound_and_the_retry_succeeds() {
    // The instances and the local backup first, everything passing.
    let Some(Proxied {
        s3,
        bucket,
        proxy,
        tmp,
    }) = proxied_and_applied("cut")
    else {
        return;
    };
    let dir = tmp.path();

    // Room for the repository's config and key and a part of the first pack, no more.
    proxy.cut_after(2 << 20);
    append_config(
        dir,
        "[instances.contoso.backups.offsite]\nstorage = \"archive\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let out = run.transcript();
    assert!(
        out.contains("contoso/offsite") && out.contains("backup failed"),
        "{out}"
    );
    assert!(
        out.contains(&format!("bucket `{bucket}`"))
            && out.contains("the connection was cut off during the request"),
        "the message names the storage and what happened: {out}"
    );
    let failed = backup_by_key(dir, "offsite");
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["snapshot_id"], serde_json::Value::Null);
    // The repository is there, consistent, and holds no snapshot.
    let names = objects(&s3, &bucket);
    assert!(names.iter().any(|n| n == "repo/config"), "{names:?}");
    // The failed run's lock may be left behind (its removal was cut off too): restic sees it
    // until it is stale, so the check reads without locking.
    let (ok, text) = restic(&s3, &bucket, dir, &["check", "--no-lock"]);
    assert!(ok, "restic check after the cut upload: {text}");
    let (ok, text) = restic(&s3, &bucket, dir, &["snapshots", "--json"]);
    assert!(ok, "{text}");
    assert!(text.trim_start().starts_with("[]"), "no snapshot: {text}");

    // Later the line is fine again: the retry succeeds and restores.
    proxy.set(Mode::Pass);
    retry_due(dir, failed["id"].as_str().unwrap());
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let done = backup_by_key(dir, "offsite");
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["id"], failed["id"], "the same backup, tried again");
    let expected = tempfile::tempdir().unwrap();
    let ok = Command::new("cp")
        .arg("-a")
        .arg(dir.join("data/contoso/."))
        .arg(expected.path())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    append_config(
        dir,
        "[restores.from-archive]\nfrom = \"contoso/offsite\"\nto = \"contoso-sandbox\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_same_tree(expected.path(), &dir.join("data/contoso-sandbox"));
    let (ok, text) = restic(&s3, &bucket, dir, &["check", "--read-data"]);
    assert!(ok, "{text}");
}

#[test]
fn a_missing_credential_is_refused_before_any_request() {
    let Some(Proxied {
        s3,
        bucket,
        proxy,
        tmp,
    }) = proxied("nocred")
    else {
        return;
    };
    let dir = tmp.path();
    std::fs::remove_file(dir.join("s3.secret")).unwrap();
    append_config(
        dir,
        "[instances.contoso.backups.offsite]\nstorage = \"archive\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let out = run.transcript();
    assert!(
        out.contains("`secret_access_key_file` names [DIR]/s3.secret, which cannot be read"),
        "{out}"
    );
    assert_eq!(proxy.connections(), 0, "no request was made");
    assert_eq!(objects(&s3, &bucket), Vec::<String>::new());
}

#[test]
fn wrong_credentials_on_a_used_storage_fail_clearly_and_write_nothing() {
    let Some(az) = emulator("azurite", "BACKPLAN_TEST_AZURITE") else {
        return;
    };
    let container = unique("badkey");
    create_container(&az, &container);
    let tmp = quickstart_with(&format!(
        "[storage.archive]\nkind = \"azure\"\naccount = \"{AZ_ACCOUNT}\"\ncontainer = \"{container}\"\nendpoint = \"{az}\"\naccess_key_file = \"azure.key\"\npassword_file = \"archive.key\"\n\n[instances.contoso.backups.first]\nstorage = \"archive\""
    ));
    let dir = tmp.path();
    write_secret(&dir.join("azure.key"), AZ_KEY);
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let before = blobs(&az, &container);
    assert!(before.iter().any(|n| n == "config"), "{before:?}");

    // The key is rotated in the portal but not in the file.
    write_secret(
        &dir.join("azure.key"),
        "bm90IHRoZSBrZXkgb2YgdGhpcyBhY2NvdW50IGF0IGFsbCwgc29ycnkgYWJvdXQgdGhhdA==",
    );
    append_config(
        dir,
        "[instances.contoso.backups.second]\nstorage = \"archive\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let out = run.transcript();
    assert!(
        out.contains("contoso/second") && out.contains("refused the credentials"),
        "{out}"
    );
    assert!(
        !out.contains("bm90IHRoZSBrZXkg"),
        "the key is not shown: {out}"
    );
    assert_eq!(blobs(&az, &container), before, "nothing was written");
    assert_eq!(backup_by_key(dir, "second")["status"], "failed");
    assert_eq!(backup_by_key(dir, "first")["status"], "completed");
}

/// `apply` with a bound: a hung run is a failure of the test, not a hung test.
fn apply_within(dir: &Path, limit: Duration, env: &[(&str, &str)]) -> (i32, String, Duration) {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_backplan"))
        .args(["apply", "-c", "backplan.toml", "--auto-approve"])
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (out.status.code().unwrap_or(-1), text, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "apply still running after {limit:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_trickling_endpoint_fails_the_backup_within_the_request_bound() {
    let Some(Proxied {
        bucket, proxy, tmp, ..
    }) = proxied_and_applied("slow")
    else {
        return;
    };
    let dir = tmp.path();
    // Every byte arrives, 20 a second: the whole upload would take days. The client's read
    // bound (counted from the request's start while nothing of the answer came: here 2 s a
    // try, 5 tries) ends it; the whole-request bound (6 s here) backs it up.
    proxy.set(Mode::Trickle);
    append_config(
        dir,
        "[instances.contoso.backups.offsite]\nstorage = \"archive\"",
    );
    let (code, out, took) = apply_within(
        dir,
        Duration::from_secs(150),
        &[("BACKPLAN_TEST_STORAGE_TIMEOUT", "2")],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("contoso/offsite") && out.contains(&format!("bucket `{bucket}`")),
        "{out}"
    );
    eprintln!("the trickling storage failed the backup after {took:?}");
    proxy.set(Mode::Pass);
}

#[test]
fn a_stalled_endpoint_never_blocks_the_control_socket_and_the_queue_moves_on() {
    let Some(Proxied {
        bucket, proxy, tmp, ..
    }) = proxied_and_applied("stall")
    else {
        return;
    };
    let dir = tmp.path();

    // The storage takes every request in and never answers.
    proxy.set(Mode::Stall);
    append_config(
        dir,
        "[instances.contoso.backups.offsite]\nstorage = \"archive\"",
    );
    let d = Daemon::start(dir, &[], &[("BACKPLAN_TEST_STORAGE_TIMEOUT", "3")]);
    d.wait_for("the backup to the stalled storage to start", || {
        backups_json(dir)
            .iter()
            .any(|b| b["key"] == "offsite" && b["status"] == "running")
    });
    // A backup of the local storage is asked for while the other one hangs.
    append_config(dir, "[instances.contoso.backups.here]\nlabel = \"Local\"");
    for _ in 0..5 {
        let start = Instant::now();
        let run = backplan(dir, &["status", "-c", "backplan.toml"]);
        let took = start.elapsed();
        assert_eq!(run.code, 0, "{}", run.transcript());
        assert!(
            took < Duration::from_secs(2),
            "status took {took:?} while a storage hangs"
        );
        assert!(
            run.stdout.contains("daemon") || run.stdout.contains("reconcil"),
            "the daemon answered: {}",
            run.stdout
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // One operation at a time: the hung one ends within its bound (3 s a request here), and
    // the local backup follows.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if backups_json(dir)
            .iter()
            .any(|b| b["key"] == "here" && b["status"] == "completed")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let here = backup_by_key(dir, "here");
    assert_eq!(here["status"], "completed", "{here}\n{}", d.log());
    let offsite = backup_by_key(dir, "offsite");
    assert_eq!(offsite["status"], "failed", "{offsite}");
    assert!(
        offsite["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("bucket `{bucket}`"))),
        "{offsite}"
    );
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}
