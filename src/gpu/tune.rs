//! Opt-in kernel autotuning (like cuDNN's benchmark mode): the first time a kernel meets a
//! problem shape, each candidate configuration (GEMM tile, reduction split) is timed on the
//! GPU with timestamp queries on the real operands, and the fastest is kept for that shape.
//!
//! The choices live in the [`Gpu`] (one map per device) and in a JSON file keyed by the
//! adapter (name, driver, backend and this crate's version), so that a later run on the same
//! card and driver starts tuned. The file is `SSNET_TUNE_FILE`, else
//! `$XDG_CACHE_HOME/ssnet/tune.json`, else `~/.cache/ssnet/tune.json`; it is read when tuning
//! is enabled and rewritten (temporary file + rename) after every new choice. A file that
//! cannot be parsed is ignored with a one-line warning (and replaced at the next write).
//!
//! Enabled by `SSNET_TUNE=1` (read when the GPU is opened), `--tune` on `ssnet bench` /
//! `ssnet train`, or [`Gpu::enable_tuning`]. Off, every kernel uses its shape heuristic,
//! exactly as before. Tuning needs `TIMESTAMP_QUERY`; without it the heuristic stays.
//!
//! Which kernels are tuned and over what candidates: `ops::conv` (forward / input-gradient
//! `conv_gemm`, `conv_wgrad`, `ct_gemm`). A choice changes only how a sum is split into
//! partial sums, never what is summed, and a shape always gets the same choice from the
//! cache, so results stay deterministic for a given cache.

use super::Gpu;
use crate::error::Result;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Timed repetitions per candidate (after one untimed run that compiles and warms up); the
/// fastest repetition counts.
const TUNE_REPS: usize = 3;

/// One tuned configuration of a tiled kernel: tile rows, columns, reduction step, groups of
/// invocations sharing a stage (`conv_wgrad`; 1 elsewhere) and reduction splits requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TileChoice {
    pub bm: u32,
    pub bn: u32,
    pub bk: u32,
    pub g: u32,
    pub splits: u32,
}

/// The tuning state of one device.
#[derive(Default)]
pub(crate) struct Tuner {
    enabled: bool,
    file: Option<PathBuf>,
    cache: HashMap<String, TileChoice>,
    /// Shapes tuned by timing in this process.
    runs: usize,
}

/// The cache file: per adapter key, per kernel/shape key, the choice.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct TuneFile {
    version: u32,
    adapters: BTreeMap<String, BTreeMap<String, TileChoice>>,
}

const FILE_VERSION: u32 = 1;

fn warn(msg: impl std::fmt::Display) {
    let one = msg
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("ssnet: warning: {one}");
}

/// Where the cache file goes by default: `SSNET_TUNE_FILE`, else the user's cache folder.
pub fn default_tune_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SSNET_TUNE_FILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|p| !p.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("ssnet").join("tune.json"))
}

fn read_file(path: &Path) -> std::result::Result<Option<TuneFile>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let f: TuneFile =
        serde_json::from_str(&text).map_err(|e| format!("not a tuning cache: {e}"))?;
    if f.version != FILE_VERSION {
        return Err(format!(
            "version {} (this build writes {FILE_VERSION})",
            f.version
        ));
    }
    Ok(Some(f))
}

impl Gpu {
    /// The key of this adapter's section in the cache file.
    pub fn tune_adapter_key(&self) -> String {
        format!(
            "{} | {} {} | {:?} | ssnet {}",
            self.info.name,
            self.info.driver,
            self.info.driver_info,
            self.info.backend,
            env!("CARGO_PKG_VERSION")
        )
    }

    /// Turn autotuning on, with the cache file `file` (else [`default_tune_file`]; `None`
    /// there keeps the choices in memory only). Loads this adapter's choices from the file; a
    /// corrupt file is ignored with a one-line warning. Returns whether tuning is on (not
    /// when the adapter has no `TIMESTAMP_QUERY`: then a warning, and the heuristic stays).
    pub fn enable_tuning(&self, file: Option<PathBuf>) -> bool {
        if !self.has_timestamps() {
            warn(format!(
                "tuning needs GPU timestamps (TIMESTAMP_QUERY), which '{}' does not offer: the tile heuristic stays",
                self.info.name
            ));
            return false;
        }
        let file = file.or_else(default_tune_file);
        let mut loaded = HashMap::new();
        match &file {
            None => warn("no tuning cache file (set SSNET_TUNE_FILE or HOME): tunings are kept for this run only"),
            Some(p) => match read_file(p) {
                Ok(Some(f)) => {
                    if let Some(sec) = f.adapters.get(&self.tune_adapter_key()) {
                        loaded.extend(sec.iter().map(|(k, v)| (k.clone(), *v)));
                    }
                }
                Ok(None) => {}
                Err(e) => warn(format!("ignoring the tuning cache {}: {e}", p.display())),
            },
        }
        let mut t = self.tuner.lock().unwrap();
        t.enabled = true;
        t.file = file;
        for (k, v) in loaded {
            t.cache.entry(k).or_insert(v);
        }
        true
    }

    /// Turn autotuning off (the choices stay in memory for a later [`Gpu::enable_tuning`]).
    pub fn disable_tuning(&self) {
        self.tuner.lock().unwrap().enabled = false;
    }

    /// Whether kernels tune unseen shapes (and use tuned choices).
    pub fn tuning_enabled(&self) -> bool {
        self.tuner.lock().unwrap().enabled
    }

    /// The cache file in use, if any.
    pub fn tune_file(&self) -> Option<PathBuf> {
        self.tuner.lock().unwrap().file.clone()
    }

    /// Every tuned choice of this device (loaded or timed), by kernel/shape key.
    pub fn tuned_choices(&self) -> BTreeMap<String, TileChoice> {
        let t = self.tuner.lock().unwrap();
        t.cache.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// How many shapes this process has tuned by timing (choices found in the cache are not
    /// counted).
    pub fn tune_runs(&self) -> usize {
        self.tuner.lock().unwrap().runs
    }

    /// The tuned choice for `key` when tuning is on and the shape was tuned.
    pub(crate) fn tuned(&self, key: &str) -> Option<TileChoice> {
        let t = self.tuner.lock().unwrap();
        if !t.enabled {
            return None;
        }
        t.cache.get(key).copied()
    }

    /// Keep a newly timed choice and rewrite the cache file (a failure to write is a warning:
    /// the choice still holds for this run).
    pub(crate) fn store_tuned(&self, key: String, choice: TileChoice) {
        let (file, section) = {
            let mut t = self.tuner.lock().unwrap();
            t.cache.insert(key, choice);
            t.runs += 1;
            let section: BTreeMap<String, TileChoice> =
                t.cache.iter().map(|(k, v)| (k.clone(), *v)).collect();
            (t.file.clone(), section)
        };
        let Some(path) = file else {
            return;
        };
        // Merge with what is there now (other adapters, other processes); a bad file is replaced.
        let mut f = read_file(&path).ok().flatten().unwrap_or_default();
        f.version = FILE_VERSION;
        f.adapters
            .entry(self.tune_adapter_key())
            .or_default()
            .extend(section);
        let text = match serde_json::to_string_pretty(&f) {
            Ok(t) => t,
            Err(e) => return warn(format!("cannot serialise the tuning cache: {e}")),
        };
        if let Err(e) = crate::fsutil::atomic_write(&path, text.as_bytes()) {
            warn(format!("cannot write the tuning cache: {e}"));
        }
    }

    /// Time each candidate: `run(c)` records its dispatches (outputs discarded); one untimed
    /// run, then [`TUNE_REPS`] runs each timed on the GPU alone (this waits). The index of
    /// the fastest (the first among equals), or `None` without GPU timestamps.
    pub(crate) fn time_candidates<C: Copy>(
        &self,
        candidates: &[C],
        mut run: impl FnMut(C) -> Result<()>,
    ) -> Result<Option<usize>> {
        if !self.has_timestamps() || candidates.is_empty() {
            return Ok(None);
        }
        let mut best: Option<(usize, f64)> = None;
        for (i, &c) in candidates.iter().enumerate() {
            run(c)?;
            let mut fastest = f64::INFINITY;
            for _ in 0..TUNE_REPS {
                self.timing_begin();
                let r = run(c);
                let t = self.timing_end();
                r?;
                match t? {
                    Some(t) => fastest = fastest.min(t.span_ms),
                    None => return Ok(None),
                }
            }
            if best.is_none_or(|(_, b)| fastest < b) {
                best = Some((i, fastest));
            }
        }
        Ok(best.map(|(i, _)| i))
    }
}
