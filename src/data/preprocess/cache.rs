//! The preprocessed cases of a run, kept on disk under `<run>/preprocessed/<fingerprint>/`.
//!
//! The fingerprint is an xxHash3 of every input file (its path, length and bytes) and of the
//! preprocessing (a JSON text): a changed scan, label or setting gives another folder, so
//! stale data is never reused. Each case is one `<id>.bin` (a JSON line with its geometry,
//! then the f32 image and the u8 label, little-endian); a `complete` file written last marks
//! a folder whose every case is there.

use super::{Geometry, Prepared};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use twox_hash::XxHash3_64;

/// The folder of a run's cache.
pub const CACHE_DIR: &str = "preprocessed";
const COMPLETE: &str = "complete";

/// A fingerprint of files and a settings text: 16 hex digits.
pub fn fingerprint(files: &[&Path], settings: &str) -> Result<String> {
    let mut h = XxHash3_64::with_seed(0);
    use std::hash::Hasher;
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| Error::file(f, format!("cannot read: {e}")))?;
        h.write(f.to_string_lossy().as_bytes());
        h.write(&(bytes.len() as u64).to_le_bytes());
        h.write(&bytes);
    }
    h.write(settings.as_bytes());
    Ok(format!("{:016x}", h.finish()))
}

/// The cache folder of a fingerprint in a run folder.
pub fn folder(run: &Path, fingerprint: &str) -> PathBuf {
    run.join(CACHE_DIR).join(fingerprint)
}

/// Whether `dir` holds a complete cache.
pub fn is_complete(dir: &Path) -> bool {
    dir.join(COMPLETE).is_file()
}

#[derive(Serialize, Deserialize)]
struct Head {
    spacing: [f64; 3],
    geometry: Geometry,
    labelled: bool,
}

fn case_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.bin"))
}

/// Write every case, then the `complete` marker (a folder left without it by a kill is
/// rebuilt by the next run).
pub fn write_all<'a>(
    dir: &Path,
    cases: impl Iterator<Item = (&'a str, &'a Prepared)>,
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::file(dir, format!("cannot create folder: {e}")))?;
    let mut n = 0;
    for (id, p) in cases {
        write_case(dir, id, p)?;
        n += 1;
    }
    let c = dir.join(COMPLETE);
    std::fs::write(&c, format!("{n}\n")).map_err(|e| Error::file(&c, format!("cannot write: {e}")))
}

fn write_case(dir: &Path, id: &str, p: &Prepared) -> Result<()> {
    let path = case_path(dir, id);
    let head = serde_json::to_string(&Head {
        spacing: p.spacing,
        geometry: p.geometry.clone(),
        labelled: p.label.is_some(),
    })
    .map_err(|e| Error::file(&path, format!("cannot serialise: {e}")))?;
    let mut buf = Vec::with_capacity(head.len() + 1 + p.image.len() * 5);
    buf.extend_from_slice(head.as_bytes());
    buf.push(b'\n');
    buf.extend_from_slice(bytemuck::cast_slice(&p.image));
    if let Some(l) = &p.label {
        buf.extend_from_slice(l);
    }
    let mut f = std::fs::File::create(&path)
        .map_err(|e| Error::file(&path, format!("cannot create: {e}")))?;
    f.write_all(&buf)
        .map_err(|e| Error::file(&path, format!("cannot write: {e}")))
}

/// Read a case of a complete cache folder.
pub fn read_case(dir: &Path, id: &str) -> Result<Prepared> {
    let path = case_path(dir, id);
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::file(&path, format!("cannot read the cached case: {e}")))?;
    let bad = |m: &str| {
        Error::file(
            &path,
            format!(
                "corrupt cache file ({m}): delete the folder {} to rebuild it",
                dir.display()
            ),
        )
    };
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no header"))?;
    let head: Head = serde_json::from_slice(&bytes[..nl]).map_err(|_| bad("bad header"))?;
    let n: usize = head.geometry.shape.iter().product();
    let body = &bytes[nl + 1..];
    let want = n * 4 + if head.labelled { n } else { 0 };
    if body.len() != want {
        return Err(bad("wrong length"));
    }
    let image: Vec<f32> = body[..n * 4]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let label = head.labelled.then(|| body[n * 4..].to_vec());
    Ok(Prepared {
        image,
        label,
        spacing: head.spacing,
        geometry: head.geometry,
    })
}
