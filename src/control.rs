//! The control socket: one JSON line in (a [`Query`]), one JSON line out (an [`Answer`]).
//! The daemon serves it; the CLI asks it first and reads the state itself when nobody
//! listens.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::query::{Answer, Query};
use crate::records::Recorded;

/// A reply on the socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    Answer(Answer),
    Error { error: String },
}

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// Nobody listens: the caller reads the state itself.
    #[error("no daemon listens on {0}")]
    NoDaemon(String),
    #[error("the daemon on {socket} did not answer properly: {reason}")]
    Broken { socket: String, reason: String },
}

/// Asks the daemon listening on `socket`; a stuck daemon must not hang the CLI, so the answer
/// is waited for at most a minute.
pub fn ask(socket: &Path, q: &Query) -> Result<Answer, AskError> {
    ask_within(socket, q, Some(Duration::from_secs(60)))
}

/// Like [`ask`], waiting `timeout` for the answer (`None`: as long as it takes, for an
/// approved plan that the daemon carries out).
pub fn ask_within(socket: &Path, q: &Query, timeout: Option<Duration>) -> Result<Answer, AskError> {
    let stream = send(socket, q, timeout)?;
    let broken = |reason| broken(socket, reason);
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(|e| broken(e.to_string()))?;
    match serde_json::from_str::<Reply>(&reply) {
        Ok(Reply::Answer(a)) => Ok(a),
        Ok(Reply::Error { error }) => Err(broken(error)),
        Err(e) => Err(broken(format!("unreadable reply ({e})"))),
    }
}

/// The reply to [`Query::Recorded`]: the records themselves, not an [`Answer`] holding them
/// as text (the state of a large host is tens of MiB of JSON: the daemon writes it once, the
/// CLI reads it straight into records).
#[derive(Debug, Serialize, Deserialize)]
pub struct RecordedReply<R> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<R>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// [`Query::Recorded`] of the daemon: Ok(Ok(records)), or Ok(Err(why it has none)).
pub fn ask_recorded(socket: &Path) -> Result<Result<Recorded, String>, AskError> {
    let stream = send(socket, &Query::Recorded, Some(Duration::from_secs(60)))?;
    let broken = |reason| broken(socket, reason);
    let reply = serde_json::Deserializer::from_reader(BufReader::new(&stream))
        .into_iter::<RecordedReply<Recorded>>()
        .next()
        .ok_or_else(|| broken("no reply".into()))?
        .map_err(|e| broken(format!("unreadable reply ({e})")))?;
    Ok(match reply {
        RecordedReply {
            recorded: Some(r), ..
        } => Ok(r),
        RecordedReply { error, .. } => Err(error.unwrap_or_else(|| "no records".into())),
    })
}

fn broken(socket: &Path, reason: String) -> AskError {
    AskError::Broken {
        socket: socket.display().to_string(),
        reason,
    }
}

/// Connects and sends `q`: the stream to read the reply from.
fn send(socket: &Path, q: &Query, timeout: Option<Duration>) -> Result<UnixStream, AskError> {
    let name = socket.display().to_string();
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(AskError::NoDaemon(name));
        }
        Err(e) => {
            return Err(AskError::Broken {
                socket: name,
                reason: e.to_string(),
            });
        }
    };
    let broken = |reason| broken(socket, reason);
    // A verification reads data back and takes as long as it takes.
    let _ = stream.set_read_timeout(if matches!(q, Query::Verify { .. }) {
        None
    } else {
        timeout
    });
    let mut line = serde_json::to_string(q).expect("queries serialise");
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| broken(e.to_string()))?;
    Ok(stream)
}

/// Parses one request line; a malformed or unknown request is an error reply, never a crash.
pub fn parse_request(line: &str) -> Result<Query, String> {
    serde_json::from_str(line.trim()).map_err(|e| {
        format!(
            "bad request: {e}; send one JSON object per line, like {{\"command\":\"status\",\"json\":true}}"
        )
    })
}

/// What an operator approves of a plan: its actions from the file, one `op address` line each.
/// The daemon carries out an approved plan only when its own plan has the same lines (the
/// time-driven work, and the identifiers of backups taken at a given time, may differ).
pub fn approved_actions(plan: &crate::plan::Plan) -> String {
    plan.actions
        .iter()
        .map(|a| {
            format!(
                "{} {}\n",
                serde_json::to_value(a.op)
                    .expect("ops serialise")
                    .as_str()
                    .unwrap_or("?"),
                a.address
            )
        })
        .collect()
}
