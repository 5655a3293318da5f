//! Byte-stream backups: the standard output of a producer process (`pg_dump`, ...), or what a
//! writer of this process writes on a thread of its own (SQLite's pages), stored as one file
//! of a snapshot, and streamed back out into a sink. Both kinds of producer go through the
//! same archiving and the same guards.
//!
//! Guards for the stream hazards of rustic_core 0.13 (each has a test below):
//! - **short reads**: the chunker shrinks its read buffer after a short read and never grows it
//!   back, so a pipe would end up read one byte per call. The reader handed to rustic fills
//!   the buffer (or reaches the end) before it returns.
//! - **no parent**: a stream has no metadata to compare, so with a parent snapshot rustic would
//!   take the parent's content for "unchanged" and never read the stream. Streams never use one.
//! - **no snapshot when the producer fails**: rustic saves the snapshot of whatever it read; the
//!   producer's exit status (a writer's result, or its panic) is checked afterwards, and on
//!   failure the snapshot is deleted before the error (with the producer's own message) is
//!   returned.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{ErrorKind, ReadSource, ReadSourceEntry, ReadSourceOpen, RusticResult};

use super::*;

/// The last bytes a producer wrote to its standard error, for the failure message.
const STDERR_KEPT: usize = 16 * 1024;

/// The buffer between the pipe and the chunker: the chunker reads 64 KiB at a time, and each
/// of those would otherwise be a system call.
const READ_BUFFER: usize = 1 << 20;

impl RusticEngine {
    pub(super) fn stream_backup(
        &self,
        repo: &Repo,
        source: &StreamSource,
        tags: &SnapshotTags,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<SnapshotInfo, EngineError> {
        self.guarded(repo, "stream backup", || {
            let program = source.argv.first().cloned().unwrap_or_default();
            self.archive_stream(repo, &source.name, &program, tags, progress.clone(), || {
                let mut producer = Producer::start(source)?;
                let Some(stdout) = producer.child.stdout.take() else {
                    let _ = producer.child.kill();
                    let _ = producer.finish();
                    return Err(EngineError::Io {
                        op: "starting the backup's producer",
                        source: std::io::Error::other("no standard output to read"),
                    });
                };
                let reader = std::io::BufReader::with_capacity(READ_BUFFER, stdout);
                Ok((
                    Box::new(reader) as Box<dyn Read + Send>,
                    Box::new(move |stopped_early: bool| {
                        // Killed if rustic stopped reading early; reaped in any case.
                        if stopped_early {
                            let _ = producer.child.kill();
                        }
                        producer.finish()
                    }) as Finish,
                ))
            })
        })
    }

    pub(super) fn written_backup(
        &self,
        repo: &Repo,
        source: &WrittenStream,
        tags: &SnapshotTags,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<SnapshotInfo, EngineError> {
        self.guarded(repo, "stream backup", || {
            self.archive_stream(
                repo,
                &source.name,
                &source.producer,
                tags,
                progress.clone(),
                || {
                    let (reader, mut writer) = channel();
                    let write = source.write.clone();
                    let thread = std::thread::Builder::new()
                        .name("stream-writer".into())
                        .spawn(move || {
                            write(&mut writer)?;
                            writer
                                .finish()
                                .map_err(|e| format!("handing the last bytes over: {e}"))
                        })
                        .map_err(|source| EngineError::Io {
                            op: "starting the backup's writer thread",
                            source,
                        })?;
                    Ok((
                        Box::new(reader) as Box<dyn Read + Send>,
                        // The reading end is gone by now: a writer still writing stops at its next
                        // hand-over, with an error.
                        Box::new(move |_stopped_early: bool| match thread.join() {
                            Ok(outcome) => outcome,
                            Err(panic) => {
                                Err(format!("it panicked: {}", super::panic_message(&panic)))
                            }
                        }) as Finish,
                    ))
                },
            )
        })
    }

    /// The one file `name` read from what `start` returns, archived as a snapshot of its own;
    /// then the producer's outcome (`Finish`, told whether rustic stopped reading early)
    /// decides: on `Err`, the snapshot is deleted and the error (naming `program`) returned.
    fn archive_stream(
        &self,
        repo: &Repo,
        name: &str,
        program: &str,
        tags: &SnapshotTags,
        progress: Arc<dyn ProgressSink>,
        start: impl FnOnce() -> Result<(Box<dyn Read + Send>, Finish), EngineError>,
    ) -> Result<SnapshotInfo, EngineError> {
        let (open, _lock) = self.open_locked(repo, progress.clone(), super::lock::Mode::Shared)?;
        let indexed = open.to_indexed_ids().map_err(err(repo))?;
        let snap = new_snapshot(repo, tags)?;
        // No parent, ever: see the module's comment.
        let opts = BackupOptions::default().parent_opts(ParentOptions::default().force(true));

        let (reader, finish) = start()?;
        let src = StreamRead {
            name: PathBuf::from(name),
            reader: Mutex::new(Some(reader)),
        };
        let saved = indexed.archive(&opts, &src, snap, &[PathBuf::from(name)]);
        // The reading end goes before the producer is waited for: a writer thread blocked on a
        // full hand-over sees it gone (a process killed below is not read either).
        drop(src);
        // Whatever happened, the producer is done with; only then is the snapshot judged.
        let outcome = finish(saved.is_err());
        let saved = saved.map_err(err(repo))?;
        let info = info(&saved);
        if let Err(message) = outcome {
            let ids = open_ids(&indexed, std::slice::from_ref(&info.id), repo)?;
            indexed.delete_snapshots(&ids).map_err(err(repo))?;
            sync_repository(repo)?;
            return Err(EngineError::Producer {
                program: program.to_string(),
                message,
            });
        }
        sync_repository(repo)?;
        Ok(info)
    }

    pub(super) fn stream_restore(
        &self,
        repo: &Repo,
        snapshot: &str,
        name: &str,
        sink: &mut (dyn Write + Send),
    ) -> Result<u64, EngineError> {
        self.guarded(repo, "stream restore", || {
            let (open, lock) =
                self.open_locked(repo, Arc::new(NoProgress), super::lock::Mode::Shared)?;
            let indexed = open.to_indexed().map_err(err(repo))?;
            let snap = find_snapshot(&indexed, repo, snapshot)?;
            let node = indexed
                .node_from_snapshot_and_path(&snap, name)
                .map_err(err(repo))?;
            if node.node_type != NodeType::File {
                return Err(EngineError::Repository {
                    repo: repo.path.clone(),
                    message: format!("`{name}` in snapshot {snapshot} is not a stream backup"),
                });
            }
            // Nothing goes into the sink before the lock's second look (`gate.rs`).
            second_look(&lock, repo)?;
            let mut counting = Counting { inner: sink, n: 0 };
            indexed.dump(&node, &mut counting).map_err(err(repo))?;
            counting.flush().map_err(|source| EngineError::Io {
                op: "writing the restored stream",
                source,
            })?;
            Ok(counting.n)
        })
    }
}

/// A running producer, its standard error collected on a thread of its own (so that a
/// chatty producer never blocks on a full stderr pipe).
struct Producer {
    child: Child,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    program: String,
}

impl Producer {
    fn start(source: &StreamSource) -> Result<Producer, EngineError> {
        let (program, args) = source.argv.split_first().ok_or(EngineError::Io {
            op: "starting the backup's producer",
            source: std::io::Error::other("no command given"),
        })?;
        let mut child = Command::new(program)
            .args(args)
            .envs(source.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| EngineError::Producer {
                program: program.clone(),
                message: format!("cannot start it: {e}"),
            })?;
        if let Some(out) = &child.stdout {
            crate::pipe::widen(out);
        }
        let stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > STDERR_KEPT {
                        kept.drain(..kept.len() - STDERR_KEPT);
                    }
                }
                kept
            })
        });
        Ok(Producer {
            child,
            stderr,
            program: program.clone(),
        })
    }

    /// Waits for the producer; `Err` with its message unless it exited 0.
    fn finish(mut self) -> Result<(), String> {
        let status = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!(
                "{} {s}{}",
                self.program,
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr}")
                }
            )),
            Err(e) => Err(format!("waiting for {}: {e}", self.program)),
        }
    }
}

/// Ends a producer, told whether rustic stopped reading early: `Err` with its message unless
/// it produced the whole stream.
type Finish = Box<dyn FnOnce(bool) -> Result<(), String>>;

/// The one entry of a stream backup.
struct StreamRead {
    name: PathBuf,
    reader: Mutex<Option<Box<dyn Read + Send>>>,
}

struct StreamOpen(Box<dyn Read + Send>);

impl ReadSourceOpen for StreamOpen {
    type Reader = FullReads<Box<dyn Read + Send>>;
    fn open(self) -> RusticResult<Self::Reader> {
        Ok(FullReads(self.0))
    }
}

impl ReadSource for StreamRead {
    type Open = StreamOpen;
    type Iter = std::iter::Once<RusticResult<ReadSourceEntry<StreamOpen>>>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Self::Iter {
        let reader = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take();
        let entry = match reader {
            Some(reader) => {
                let name = self.name.file_name().unwrap_or(self.name.as_os_str());
                Ok(ReadSourceEntry {
                    path: self.name.clone(),
                    // The size is recorded once read (vendor/rustic_core's sixth patch); the
                    // mode is what a restic restore gives the file (none would be 0000).
                    node: Node::new_node(
                        name,
                        NodeType::File,
                        Metadata {
                            mode: Some(0o600),
                            ..Metadata::default()
                        },
                    ),
                    open: Some(StreamOpen(reader)),
                })
            }
            None => Err(RusticError::new(
                ErrorKind::Internal,
                "the producer's output was already read",
            )),
        };
        std::iter::once(entry)
    }
}

/// How many filled buffers may wait between a writer thread and the chunker.
const HANDED_OVER: usize = 4;

/// A writer thread's end of a [`channel`]: bytes are gathered into buffers of
/// [`READ_BUFFER`] bytes, each handed over whole (no system call, no copy on the way).
struct ChannelWriter {
    buf: Vec<u8>,
    to: std::sync::mpsc::SyncSender<Vec<u8>>,
}

/// The chunker's end of a [`channel`]: the stream ends when the writer's end is gone.
struct ChannelReader {
    buf: Vec<u8>,
    at: usize,
    from: std::sync::mpsc::Receiver<Vec<u8>>,
}

fn channel() -> (ChannelReader, ChannelWriter) {
    let (to, from) = std::sync::mpsc::sync_channel(HANDED_OVER);
    (
        ChannelReader {
            buf: Vec::new(),
            at: 0,
            from,
        },
        ChannelWriter {
            buf: Vec::with_capacity(READ_BUFFER),
            to,
        },
    )
}

impl ChannelWriter {
    fn hand_over(&mut self) -> std::io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(READ_BUFFER));
        self.to.send(full).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the backup stopped reading the stream",
            )
        })
    }

    /// Hands the last bytes over; only then is the stream complete.
    fn finish(mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            self.hand_over()
        }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len().min(READ_BUFFER - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == READ_BUFFER {
            self.hand_over()?;
        }
        Ok(n)
    }

    /// Buffers go over whole: what `write` took is handed over by `finish`.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            match self.from.recv() {
                Ok(next) => {
                    self.buf = next;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A reader that fills the caller's buffer before returning, unless the stream ends.
pub(super) struct FullReads<R>(pub(super) R);

impl<R: Read> Read for FullReads<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.0.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if filled > 0 => {
                    // Report what was read; the error comes again at the next call.
                    let _ = e;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

struct Counting<'a> {
    inner: &'a mut (dyn Write + Send),
    n: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gives at most one byte per call, like a pipe written to slowly.
    struct Trickle(std::io::Cursor<Vec<u8>>);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(1);
            self.0.read(&mut buf[..n])
        }
    }

    #[test]
    fn full_reads_fill_the_buffer_from_a_trickling_pipe() {
        let mut r = FullReads(Trickle(std::io::Cursor::new(vec![7u8; 10_000])));
        let mut buf = vec![0u8; 4096];
        assert_eq!(r.read(&mut buf).unwrap(), 4096);
        assert_eq!(r.read(&mut buf).unwrap(), 4096);
        assert_eq!(r.read(&mut buf).unwrap(), 10_000 - 8192);
        assert_eq!(r.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn full_reads_through_the_read_buffer_keep_every_byte_in_order() {
        let data: Vec<u8> = (0..1_200_000u32).map(|i| (i % 251) as u8).collect();
        let mut r = FullReads(std::io::BufReader::with_capacity(
            READ_BUFFER,
            Trickle(std::io::Cursor::new(data.clone())),
        ));
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            assert!(n == buf.len() || got.len() + n == data.len());
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, data);
    }

    /// The chunker's scan (the patched rustic_cdc's `slide_to_boundary`, several hashes at
    /// once) stops where sliding one byte at a time and checking after each stops, and
    /// leaves the same hash and window: on random, dump-like and periodic bytes, with masks
    /// that cut every byte, often, or (at the real 1 MiB) rarely, windows primed with a
    /// chunk's first bytes as the chunker does, and slices of every length.
    #[test]
    fn the_chunker_s_scan_cuts_where_one_byte_at_a_time_does() {
        use rustic_cdc::{Rabin64, RollingHash64};
        let reference = |r: &mut Rabin64, bytes: &[u8], mask: u64| {
            for (i, b) in bytes.iter().enumerate() {
                r.slide(*b);
                if r.hash & mask == 0 {
                    return i + 1;
                }
            }
            bytes.len()
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut calls, mut cuts) = (0, 0);
        for round in 0..240 {
            let len = (next() % 40_000) as usize;
            let data: Vec<u8> = (0..len + 200)
                .map(|i| match round % 3 {
                    0 => next() as u8,
                    1 if i % 97 < 60 => b' ',
                    1 => b'0' + (next() % 4) as u8,
                    _ => (i % 7) as u8,
                })
                .collect();
            let mask = [0u64, 0x3, 0xff, 0xfff, 0xffff, (1 << 20) - 1][(next() % 6) as usize];
            let mut a = Rabin64::new_with_polynom(6, &0x003D_A335_8B4D_C173);
            let pre = (next() % 65) as usize;
            let _ = a.reset_and_prefill_window(&mut data[..pre].iter().copied());
            let mut b = a.clone();
            let mut off = pre;
            while off < pre + len {
                let end = (off + 1 + (next() % 9000) as usize).min(pre + len);
                let n = reference(&mut a, &data[off..end], mask);
                assert_eq!(
                    b.slide_to_boundary(&data[off..end], mask),
                    n,
                    "round {round}"
                );
                assert_eq!(a.hash, b.hash, "round {round}");
                cuts += usize::from(n < end - off || a.hash & mask == 0);
                calls += 1;
                off += n;
            }
            // Equal windows: the bytes leaving them from here on are the same.
            for byte in &data[pre + len..] {
                a.slide(*byte);
                b.slide(*byte);
                assert_eq!(a.hash, b.hash, "round {round}, after");
            }
        }
        assert!(calls > 10_000 && cuts > 5_000, "{calls} calls, {cuts} cuts");
    }
}
