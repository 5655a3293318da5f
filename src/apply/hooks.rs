//! The one way backplan runs an operator's command (`on_update`, `before_restore`,
//! `after_restore`, `before_backup`, `after_backup`): in a process group of
//! its own, without backplan's secrets in its environment, with its output in the log line by
//! line, a time limit, and a bounded wait when the daemon stops. A hook that times out or is
//! cut short is killed as a whole group and counts as failed.

use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::{Config, SecretSource, StorageLocation};

/// How long a hook may run unless its instance's `hook_timeout` says otherwise.
pub const TIMEOUT: Duration =
    Duration::from_secs(crate::config::validate::DEFAULT_HOOK_TIMEOUT.as_secs());

/// How long a stop waits for a running hook before killing it: below the unit's
/// `TimeoutStopSec=30s` (systemd/backplan.service), with room to record the outcome.
pub const STOP_GRACE: Duration = Duration::from_secs(25);

/// Variables never passed to a hook besides the `*_env` secrets of the file: systemd's
/// credentials folder and the daemon's own channels to systemd.
const HIDDEN: &[&str] = &["CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET"];
const HIDDEN_PREFIXES: &[&str] = &["WATCHDOG_"];

/// After SIGTERM to the group, how long before SIGKILL.
const KILL_AFTER: Duration = Duration::from_secs(2);

static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Whether a hook is running now (a stop then waits up to [`STOP_GRACE`]).
pub fn running() -> bool {
    RUNNING.load(Ordering::SeqCst) > 0
}

/// The names of the environment variables that hold secrets according to the file.
pub fn secret_env_names(cfg: &Config) -> Vec<String> {
    cfg.storages
        .values()
        .filter_map(|s| match &s.location {
            StorageLocation::Azure {
                access_key: SecretSource::Env(name),
                ..
            }
            | StorageLocation::S3 {
                secret_access_key: SecretSource::Env(name),
                ..
            } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// What a run may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub stop_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: TIMEOUT,
            stop_grace: STOP_GRACE,
        }
    }
}

impl super::Executor<'_> {
    /// What a hook of `instance` may take: its `hook_timeout` (the default for an instance
    /// no longer in the file).
    pub(super) fn hook_limits(&self, instance: &str) -> Limits {
        Limits {
            timeout: self
                .cfg
                .instances
                .get(instance)
                .map(|i| Duration::from_secs(i.hook_timeout.as_secs()))
                .unwrap_or(TIMEOUT),
            stop_grace: STOP_GRACE,
        }
    }

    /// Runs the hook `which` of `instance` as the file declares it now (nothing when the key
    /// is not set, or the instance is no longer in the file); `{version}` is replaced by the
    /// instance's version in the file.
    pub(super) fn instance_hook(
        &self,
        instance: &str,
        which: &str,
        pick: impl Fn(&crate::config::InstanceHooks) -> &Vec<String>,
    ) -> Result<(), String> {
        let Some(inst) = self.cfg.instances.get(instance) else {
            return Ok(());
        };
        let version = inst.version.to_string();
        let argv: Vec<String> = pick(&inst.hooks)
            .iter()
            .map(|a| a.replace("{version}", &version))
            .collect();
        run(
            &format!("instance.{instance} {which}"),
            &argv,
            &secret_env_names(self.cfg),
            self.stop.as_deref(),
            self.hook_limits(instance),
        )
        .map_err(|e| format!("{which} failed: {e}"))
    }
}

/// Runs `argv` (program and arguments) and waits for it. `what` names it in the log (like
/// `instance.contoso on_update`); `secrets` are variable names removed from its environment;
/// `stop` is the daemon's stop flag.
pub fn run(
    what: &str,
    argv: &[String],
    secrets: &[String],
    stop: Option<&AtomicBool>,
    limits: Limits,
) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if HIDDEN.contains(&n.as_ref())
            || HIDDEN_PREFIXES.iter().any(|p| n.starts_with(p))
            || secrets.iter().any(|s| *s == n)
        {
            cmd.env_remove(&name);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    RUNNING.fetch_add(1, Ordering::SeqCst);
    let _running = scopeguard(|| {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    });
    tracing::info!("{what}: started {program} (pid {})", child.id());
    let readers = [
        child.stdout.take().map(|o| log_lines(what, "stdout", o)),
        child.stderr.take().map(|e| log_lines(what, "stderr", e)),
    ];
    let pgid = child.id() as i32;
    let started = Instant::now();
    let mut stop_seen: Option<Instant> = None;
    let mut killed: Option<(Instant, String)> = None;
    let exited = loop {
        match exited(pgid) {
            Ok(true) => break Ok(()),
            Ok(false) => {}
            Err(e) => break Err(format!("waiting for {program}: {e}")),
        }
        crate::heartbeat::beat();
        if stop_seen.is_none() && stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            tracing::warn!(
                "{what}: stopping; waiting up to {}s for {program}",
                limits.stop_grace.as_secs()
            );
            stop_seen = Some(Instant::now());
        }
        let why = if started.elapsed() >= limits.timeout {
            Some(format!(
                "{program} timed out after {}s and was killed",
                limits.timeout.as_secs()
            ))
        } else if stop_seen.is_some_and(|t| t.elapsed() >= limits.stop_grace) {
            Some(format!(
                "{program} was cut short by the daemon's stop and killed"
            ))
        } else {
            None
        };
        match (&killed, why) {
            (None, Some(why)) => {
                tracing::error!("{what}: {why}");
                signal_group(pgid, libc::SIGTERM);
                killed = Some((Instant::now(), why));
            }
            (Some((at, _)), _) if at.elapsed() >= KILL_AFTER => {
                signal_group(pgid, libc::SIGKILL);
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The group may hold more processes than the one waited for: none outlives the hook.
    // (The hook is not reaped yet, so its id cannot have been reused.)
    signal_group(pgid, libc::SIGKILL);
    let status = exited.and_then(|()| {
        child
            .wait()
            .map_err(|e| format!("waiting for {program}: {e}"))
    });
    // The readers end when every holder of the pipes is gone; do not wait for a process that
    // left the group.
    let until = Instant::now() + Duration::from_secs(1);
    for r in readers.into_iter().flatten() {
        while !r.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let status = status?;
    if let Some((_, why)) = killed {
        return Err(why);
    }
    if status.success() {
        tracing::info!("{what}: {program} finished");
        Ok(())
    } else {
        Err(format!("{program} exited with {status}"))
    }
}

/// Whether the process has exited, without reaping it.
fn exited(pid: i32) -> std::io::Result<bool> {
    // SAFETY: waitid fills the siginfo we own; WNOWAIT leaves the child to be reaped later.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        if libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(info.si_pid() != 0)
    }
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) on the process group the hook was started in (its own pid).
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Logs each line a hook writes, as it comes.
fn log_lines(
    what: &str,
    stream: &'static str,
    from: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let what = what.to_string();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            tracing::info!("{what} {stream}: {}", line.trim_end_matches('\r'));
        }
    })
}

struct Guard<F: FnMut()>(F);
impl<F: FnMut()> Drop for Guard<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
fn scopeguard<F: FnMut()>(f: F) -> Guard<F> {
    Guard(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    /// Running (a zombie waiting for its reaper is not).
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| !r.starts_with('Z')))
    }

    fn read_pid(path: &std::path::Path) -> i32 {
        for _ in 0..50 {
            if let Some(pid) = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return pid;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no pid written");
    }

    #[test]
    fn a_hook_that_times_out_is_killed_with_its_whole_group() {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("grandchild");
        // The hook starts a grandchild that ignores SIGTERM, then waits.
        let script = format!(
            "sh -c 'trap \"\" TERM; echo $$ > {}; sleep 60' & wait",
            pidfile.display()
        );
        let limits = Limits {
            timeout: Duration::from_secs(1),
            stop_grace: STOP_GRACE,
        };
        let started = Instant::now();
        let r = run("test hook", &sh(&script), &[], None, limits);
        let err = r.unwrap_err();
        assert!(err.contains("timed out after 1s"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let grandchild = read_pid(&pidfile);
        std::thread::sleep(Duration::from_millis(200));
        assert!(!alive(grandchild), "the grandchild survived its hook");
    }

    #[test]
    fn at_a_stop_a_hook_is_waited_for_then_cut_short() {
        let stop = AtomicBool::new(true);
        let limits = Limits {
            timeout: TIMEOUT,
            stop_grace: Duration::from_secs(5),
        };
        // Within the stop grace: waited for, and it succeeds.
        assert_eq!(
            run("quick", &sh("sleep 1"), &[], Some(&stop), limits),
            Ok(())
        );
        // Beyond it: cut short.
        let limits = Limits {
            timeout: TIMEOUT,
            stop_grace: Duration::from_secs(1),
        };
        let started = Instant::now();
        let err = run("slow", &sh("sleep 30"), &[], Some(&stop), limits).unwrap_err();
        assert!(err.contains("cut short"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn the_unit_gives_a_stop_time_for_a_running_hook() {
        let unit = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/backplan.service"),
        )
        .unwrap();
        let secs: u64 = unit
            .lines()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .and_then(|v| v.trim().trim_end_matches('s').parse().ok())
            .expect("TimeoutStopSec=<n>s in the unit");
        // The hook's grace, the daemon's margin (2 s) and the runtime's shutdown (1 s).
        assert!(secs >= STOP_GRACE.as_secs() + 3, "TimeoutStopSec={secs}s");
    }

    #[test]
    fn hooks_get_no_secrets_in_their_environment() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("env");
        let key = tmp.path().join("offsite.key");
        std::fs::write(&key, "repository password\n").unwrap();
        let cfg = crate::config::parse(
            std::path::Path::new("/etc/backplan/backplan.toml"),
            &format!("[storage.offsite]\nkind = \"azure\"\naccount = \"a\"\ncontainer = \"c\"\naccess_key_env = \"AZ_KEY\"\npassword_file = \"{}\"\n", key.display()),
        )
        .expect("valid")
        .0;
        let secrets = secret_env_names(&cfg);
        assert_eq!(secrets, ["AZ_KEY"]);
        // SAFETY: tests in this module set no other variable, and this one is read by the
        // child only.
        unsafe {
            std::env::set_var("AZ_KEY", "hunter2");
            std::env::set_var("WATCHDOG_PID", "1");
        }
        let script = format!("env > {}", out.display());
        run("env", &sh(&script), &secrets, None, Limits::default()).unwrap();
        let env = std::fs::read_to_string(&out).unwrap();
        assert!(env.contains("PATH="), "{env}");
        assert!(!env.contains("hunter2"), "{env}");
        assert!(!env.contains("WATCHDOG_PID"), "{env}");
    }

    #[test]
    fn a_failing_hook_reports_its_status() {
        let err = run("f", &sh("exit 3"), &[], None, Limits::default()).unwrap_err();
        assert!(err.contains("exit status: 3"), "{err}");
    }
}
