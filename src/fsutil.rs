//! File-system helpers that every floor may use (plain std + tempfile, no GPU, no model).

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Temporary files [`atomic_write`] names for `path`: `.<name>.<random>.tmp` beside it.
fn temp_prefix(path: &Path) -> String {
    format!(
        ".{}.",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
}

/// Remove the temporary files a killed [`atomic_write`] of `names` left in `dir` (and the
/// `.tmpXXXXXX` files of versions before they were named). Returns what was removed.
pub fn remove_stale_temporaries(dir: &Path, names: &[&str]) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let prefixes: Vec<String> = names.iter().map(|n| temp_prefix(Path::new(n))).collect();
    let mut removed = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = prefixes
            .iter()
            .any(|p| name.starts_with(p.as_str()) && name.ends_with(".tmp"));
        let legacy = name.len() == 10
            && name.starts_with(".tmp")
            && name[4..].chars().all(|c| c.is_ascii_alphanumeric());
        if (ours || legacy) && e.path().is_file() && std::fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed.sort();
    removed
}

/// Write bytes to `path` through a temporary file in the same folder and a rename.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::file(dir, format!("cannot create folder: {e}")))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(path))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::file(dir, format!("cannot create a temporary file: {e}")))?;
    tmp.write_all(data)
        .map_err(|e| Error::file(path, format!("cannot write: {e}")))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::file(path, format!("cannot flush: {e}")))?;
    tmp.persist(path)
        .map_err(|e| Error::file(path, format!("cannot rename into place: {e}")))?;
    Ok(())
}
