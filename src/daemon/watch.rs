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
        for p in &ev.paths {
            let name = p.file_name().map(|n| n.to_os_string());
            if name.is_some() && name == config_name {
                let _ = tx.try_send(Wake::File);
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
