//! File-system helpers that every floor may use (plain std + tempfile, no GPU, no model).

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Write bytes to `path` through a temporary file in the same folder and a rename.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::file(dir, format!("cannot create folder: {e}")))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
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
