//! Watching the file's folder and the test clock file.

use super::*;

/// Watches the file's folder (editors and git save by renaming into place) and the test
/// clock file; events for other names are ignored.
pub(super) fn watch(
    config: &Path,
    clock_file: Option<&Path>,
    tx: mpsc::Sender<Wake>,
) -> Result<notify::RecommendedWatcher, DaemonError> {
    use notify::{RecursiveMode, Watcher};
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let config = absolute(config);
    let clock = clock_file.map(absolute);
    let config_name = config.file_name().map(|n| n.to_os_string());
    let clock_name = clock
        .as_ref()
        .and_then(|c| c.file_name().map(|n| n.to_os_string()));
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        // A file renamed over the file's name arrives whole, in one step. inotify's rename
        // within the folder comes as `Name(To)` (the new name), then `Name(Both)` (old, new):
        // the second says nothing new.
        use notify::event::{ModifyKind, RenameMode};
        let (renamed_to, both) = match ev.kind {
            notify::EventKind::Modify(ModifyKind::Name(RenameMode::To)) => (true, false),
            notify::EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => (false, true),
            _ => (false, false),
        };
        for (i, p) in ev.paths.iter().enumerate() {
            let name = p.file_name().map(|n| n.to_os_string());
            if name.is_some() && name == config_name {
                if both && i + 1 == ev.paths.len() {
                    continue;
                }
                let _ = tx.try_send(if renamed_to {
                    Wake::FileReplaced
                } else {
                    Wake::File
                });
            } else if name.is_some() && name == clock_name {
                let _ = tx.try_send(Wake::Clock);
            }
        }
    })
    .map_err(|source| DaemonError::Watch {
        path: config.clone(),
        source,
    })?;
    let mut dirs = vec![config.parent().unwrap_or(Path::new("/")).to_path_buf()];
    if let Some(c) = &clock {
        dirs.push(c.parent().unwrap_or(Path::new("/")).to_path_buf());
    }
    dirs.dedup();
    for d in dirs {
        watcher
            .watch(&d, RecursiveMode::NonRecursive)
            .map_err(|source| DaemonError::Watch {
                path: d.clone(),
                source,
            })?;
    }
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next wake for the file within 5 s, skipping none.
    fn next(rx: &mut mpsc::Receiver<Wake>) -> Option<Wake> {
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < until {
            if let Ok(w) = rx.try_recv() {
                return Some(w);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// A file renamed over the watched one wakes the loop as whole (read without the
    /// debounce), once; a write in place, or the file renamed away, as a change (debounced).
    #[test]
    fn a_rename_into_place_is_told_apart_from_a_write_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("backplan.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let _watcher = watch(&file, None, tx).unwrap();

        std::fs::write(tmp.path().join("next.toml"), "a = 2\n").unwrap();
        std::fs::rename(tmp.path().join("next.toml"), &file).unwrap();
        assert_eq!(next(&mut rx), Some(Wake::FileReplaced));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(rx.try_recv().ok(), None, "one wake for one rename");

        // From outside the folder: no `Both` event, the same wake.
        let other = tempfile::tempdir_in(tmp.path().parent().unwrap()).unwrap();
        std::fs::write(other.path().join("n.toml"), "a = 3\n").unwrap();
        std::fs::rename(other.path().join("n.toml"), &file).unwrap();
        assert_eq!(next(&mut rx), Some(Wake::FileReplaced));

        std::fs::write(&file, "a = 4\n").unwrap();
        assert_eq!(next(&mut rx), Some(Wake::File));
        while rx.try_recv().is_ok() {}
        std::fs::rename(&file, tmp.path().join("old.toml")).unwrap();
        assert_eq!(next(&mut rx), Some(Wake::File));
    }
}
