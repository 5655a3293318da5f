//! The master key of a repository whose key backplan generated, kept beside that key file so
//! that a one-shot command opens the repository without the scrypt derivation.
//!
//! The file is a cache: JSON `{"password_sha256": HEX, "key": MASTER_KEY}`, written 0600
//! through a temporary file and a rename. It is used only when it names the password read
//! from the key file now (so a replaced key file is never bypassed) and then only if the
//! repository opens with it; anything else (missing, torn, foreign) falls back to the
//! password and is rewritten.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustic_core::repofile::MasterKey;
use sha2::Digest as _;

#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    password_sha256: String,
    key: MasterKey,
}

fn digest(password: &str) -> String {
    sha2::Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The kept master key for `password`, if the file holds one.
pub(super) fn read(path: &Path, password: &str) -> Option<MasterKey> {
    let text = std::fs::read(path).ok()?;
    let kept: Kept = serde_json::from_slice(&text).ok()?;
    (kept.password_sha256 == digest(password)).then_some(kept.key)
}

/// Keeps `key` for `password` (best effort: without the file the next run derives it again).
pub(super) fn write(path: &Path, password: &str, key: &MasterKey) {
    let kept = Kept {
        password_sha256: digest(password),
        key: key.clone(),
    };
    let Ok(text) = serde_json::to_vec(&kept) else {
        return;
    };
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&text))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!("could not keep the master key in {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_back_only_for_the_same_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.key.master");
        let key = MasterKey::new();
        write(&path, "secret", &key);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = read(&path, "secret").expect("kept key");
        assert_eq!(back.encrypt, key.encrypt);
        assert!(read(&path, "other").is_none(), "another password");
        std::fs::write(&path, b"{\"password_sha256\": ").unwrap();
        assert!(read(&path, "secret").is_none(), "a torn file");
        // Rewritten over a torn file, no temporary file left behind.
        write(&path, "secret", &key);
        assert!(read(&path, "secret").is_some());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
