//! The Stratum V2 authority key: loaded from the operator's file, or made on first
//! start in the data directory and kept there (owner-only), so miners pin one key
//! across restarts.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use quarry_protocol::sv2::AuthorityKeypair;

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "sv2-authority.key";

/// The authority keypair: `file` (which must exist), else the data directory's,
/// made there if missing.
///
/// # Errors
/// An unreadable file, a file that is not a secret key, or a data directory that
/// cannot take a new one.
pub fn load_or_create(file: Option<&Path>, data_dir: &Path) -> anyhow::Result<AuthorityKeypair> {
    let (path, create) = match file {
        Some(path) => (path.to_owned(), false),
        None => (data_dir.join(KEY_FILE), true),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => AuthorityKeypair::parse_secret(&text).with_context(|| {
            format!(
                "{} is not a Stratum V2 authority secret key (base58check, as SRI's configs spell it)",
                path.display()
            )
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && create => create_key(&path),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

fn create_key(path: &PathBuf) -> anyhow::Result<AuthorityKeypair> {
    use std::os::unix::fs::OpenOptionsExt;
    let keypair = AuthorityKeypair::generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{}", keypair.secret_string())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), public = %keypair.public, "made a Stratum V2 authority key");
    Ok(keypair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_kept() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_owned();
        let made = load_or_create(None, &dir).unwrap();
        let again = load_or_create(None, &dir).unwrap();
        assert_eq!(made.public, again.public);
        let mode = std::fs::metadata(dir.join(KEY_FILE)).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let named = load_or_create(Some(&dir.join(KEY_FILE)), Path::new("/nonexistent")).unwrap();
        assert_eq!(named.public, made.public);
        let missing = load_or_create(Some(&dir.join("missing.key")), &dir).unwrap_err();
        assert!(
            format!("{missing:#}").contains("missing.key"),
            "{missing:#}"
        );
        std::fs::write(dir.join("bad.key"), "not a key").unwrap();
        let bad = load_or_create(Some(&dir.join("bad.key")), &dir).unwrap_err();
        assert!(
            format!("{bad:#}").contains("not a Stratum V2 authority secret key"),
            "{bad:#}"
        );
    }
}
