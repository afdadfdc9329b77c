//! Files of the workspace the tests check (configs, CI script, editor files).

use std::path::{Path, PathBuf};

/// `path`, relative to the workspace root.
pub fn path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The text of the workspace file at `relative`, failing the test when unreadable.
pub fn read(relative: &str) -> String {
    let path = path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
