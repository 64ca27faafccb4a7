//! A checkpoint's sidecar (`last.json` / `best.json`): the volatile facts of a checkpoint
//! (where and when it was written, on which host, how long training took), kept out of its
//! bytes so that the same seed and settings give the same checkpoint.

use super::config::TrainConfig;
use crate::error::{Error, Result};
use crate::nn::checkpoint;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Sidecar files: the volatile facts of a checkpoint (where and when it was written, how
/// long training took), kept out of its bytes.
pub const LAST_SIDECAR: &str = "last.json";
pub const BEST_SIDECAR: &str = "best.json";
/// AD-MT: teacher 1 at its best validation (the official `*_best_tea_model.pth`), a
/// heads-free network checkpoint as `best.safetensors` (the student), and its sidecar.
pub const BEST_TEACHER: &str = "best_teacher.safetensors";
pub const BEST_TEACHER_SIDECAR: &str = "best_teacher.json";

/// What a sidecar holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sidecar {
    pub checkpoint: String,
    pub iteration: u64,
    /// Seconds of training up to this checkpoint, across resumes.
    pub elapsed_s: f64,
    pub out: String,
    /// Seconds since the Unix epoch.
    pub written_unix_s: u64,
    pub host: String,
}

pub fn sidecar_path(checkpoint: &Path) -> PathBuf {
    checkpoint.with_extension("json")
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

pub(crate) fn write_sidecar(
    checkpoint: &Path,
    iteration: u64,
    elapsed_s: f64,
    cfg: &TrainConfig,
) -> Result<()> {
    let s = Sidecar {
        checkpoint: checkpoint.display().to_string(),
        iteration,
        elapsed_s,
        out: cfg.out.display().to_string(),
        written_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        host: host_name(),
    };
    let text = serde_json::to_string_pretty(&s)
        .map_err(|e| Error::msg(format!("cannot serialise the sidecar: {e}")))?;
    let path = sidecar_path(checkpoint);
    checkpoint::atomic_write(&path, text.as_bytes())
}

/// The sidecar of a checkpoint, when there is a readable one.
pub fn read_sidecar(checkpoint: &Path) -> Option<Sidecar> {
    let text = std::fs::read_to_string(sidecar_path(checkpoint)).ok()?;
    serde_json::from_str(&text).ok()
}
