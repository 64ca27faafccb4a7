//! Reading the reference fixtures of `../shared/golden` and comparing against them with the
//! tolerances of its README. Used by `tests/golden.rs`; public so that other fixture sets and
//! tools can reuse it.

pub mod init;
pub mod parity;
pub mod prototypes;

pub use init::{hashed_init, hashed_values};
pub use parity::{Parity, K};
pub use prototypes::Ranking;

use crate::error::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

/// The fixture directory: `SSNET_GOLDEN_DIR`, else `../shared/golden` beside the crate.
pub fn golden_dir() -> PathBuf {
    match std::env::var_os("SSNET_GOLDEN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden"),
    }
}

/// The AD-MT fixtures (`<dir>/admt/*.safetensors`, made by `tools/admt_golden.py` from the
/// official code): `SSNET_ADMT_GOLDEN_DIR`, else `tests/fixtures` in the crate, where the
/// committed set lives.
pub fn admt_golden_dir() -> PathBuf {
    match std::env::var_os("SSNET_ADMT_GOLDEN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

/// One fixture file, fully in memory.
pub struct Fixture {
    pub path: PathBuf,
    bytes: Vec<u8>,
    pub config: serde_json::Value,
}

impl Fixture {
    /// `Fixture::load("ops", "softmax_dim1")`.
    pub fn load(folder: &str, stem: &str) -> Result<Fixture> {
        Self::load_in(&golden_dir(), folder, stem)
    }

    /// `Fixture::load_in(&admt_golden_dir(), "admt", "fusion")`.
    pub fn load_in(dir: &Path, folder: &str, stem: &str) -> Result<Fixture> {
        if !dir.is_dir() {
            return Err(Error::file(
                dir,
                "golden fixture directory not found (set SSNET_GOLDEN_DIR, or SSNET_ADMT_GOLDEN_DIR for AD-MT's)",
            ));
        }
        let path = dir.join(folder).join(format!("{stem}.safetensors"));
        Self::open(&path)
    }

    pub fn open(path: &Path) -> Result<Fixture> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::file(path, format!("cannot read fixture: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::file(path, format!("not a safetensors file: {e}")))?;
        let config = match meta.metadata().as_ref().and_then(|m| m.get("config")) {
            Some(c) => serde_json::from_str(c)
                .map_err(|e| Error::file(path, format!("bad config JSON: {e}")))?,
            None => serde_json::Value::Null,
        };
        Ok(Fixture {
            path: path.to_path_buf(),
            bytes,
            config,
        })
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("validated in open()")
    }

    /// Names of all tensors in the file, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .st()
            .names()
            .into_iter()
            .map(|s| s.to_string())
            .collect();
        v.sort();
        v
    }

    pub fn has(&self, name: &str) -> bool {
        self.st().tensor(name).is_ok()
    }

    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let t = self
            .st()
            .tensor(name)
            .map_err(|_| Error::file(&self.path, format!("no tensor '{name}'")))?;
        Ok(t.shape().to_vec())
    }

    /// An F32 tensor as (data, shape).
    pub fn f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let st = self.st();
        let t = st
            .tensor(name)
            .map_err(|_| Error::file(&self.path, format!("no tensor '{name}'")))?;
        if t.dtype() != Dtype::F32 {
            return Err(Error::file(
                &self.path,
                format!("tensor '{name}' is {:?}, expected F32", t.dtype()),
            ));
        }
        let data = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((data, t.shape().to_vec()))
    }

    /// A U8 tensor as (data, shape).
    pub fn u8(&self, name: &str) -> Result<(Vec<u8>, Vec<usize>)> {
        let st = self.st();
        let t = st
            .tensor(name)
            .map_err(|_| Error::file(&self.path, format!("no tensor '{name}'")))?;
        if t.dtype() != Dtype::U8 {
            return Err(Error::file(
                &self.path,
                format!("tensor '{name}' is {:?}, expected U8", t.dtype()),
            ));
        }
        Ok((t.data().to_vec(), t.shape().to_vec()))
    }

    /// A string from the config JSON.
    pub fn cfg_str(&self, key: &str) -> Result<String> {
        self.config
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::file(&self.path, format!("config has no string '{key}'")))
    }

    /// A number from the config JSON.
    pub fn cfg_f64(&self, key: &str) -> Result<f64> {
        self.config
            .get(key)
            .and_then(|v| v.as_f64())
            .ok_or_else(|| Error::file(&self.path, format!("config has no number '{key}'")))
    }
}

/// Errors of `got` against `want`.
#[derive(Debug, Clone, Copy)]
pub struct Errs {
    pub max_abs: f64,
    pub max_rel: f64,
    /// ||got - want||_2 / ||want||_2 (absolute L2 when want is all zero).
    pub rel_l2: f64,
}

pub fn errors(got: &[f32], want: &[f32]) -> Errs {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let (mut ma, mut mr, mut d2, mut w2) = (0f64, 0f64, 0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (g as f64, w as f64);
        let d = (g - w).abs();
        let d = if d.is_nan() { f64::INFINITY } else { d };
        ma = ma.max(d);
        mr = mr.max(d / w.abs().max(1e-12));
        d2 += d * d;
        w2 += w * w;
    }
    let rel_l2 = if w2 > 0.0 {
        (d2 / w2).sqrt()
    } else {
        d2.sqrt()
    };
    Errs {
        max_abs: ma,
        max_rel: mr,
        rel_l2,
    }
}

/// Compare by relative L2 error (the golden README's policy for ops); prints the errors and
/// the tolerance, returns an error message when over.
pub fn check_rel_l2(what: &str, got: &[f32], want: &[f32], tol: f64) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} values, expected {}",
            got.len(),
            want.len()
        ));
    }
    let e = errors(got, want);
    println!(
        "{what:<48} max_abs {:.3e}  max_rel {:.3e}  rel_l2 {:.3e}  (tol rel_l2 {tol:.0e})",
        e.max_abs, e.max_rel, e.rel_l2
    );
    if e.rel_l2 <= tol {
        Ok(())
    } else {
        Err(format!(
            "{what}: relative L2 error {:.3e} over {tol:.0e}",
            e.rel_l2
        ))
    }
}

/// The summary the fixtures store for large tensors:
/// `[sum, l2, sum|v|, v[floor(k*n/m)] for k < m]`, m = min(n, 64), computed in f64.
pub fn summary(v: &[f32]) -> Vec<f64> {
    let n = v.len();
    let m = n.min(64);
    let sum: f64 = v.iter().map(|&x| x as f64).sum();
    let l2: f64 = v
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    let abs: f64 = v.iter().map(|&x| (x as f64).abs()).sum();
    let mut out = vec![sum, l2, abs];
    out.extend((0..m).map(|k| v[k * n / m] as f64));
    out
}

/// The summary comparison's error: the worst over the entries of `got` (a summary, f64) against
/// `want` (a stored summary) of a tensor of `n` elements: the three sums relative to
/// `sum|v|`, each sample relative to `|sample| + mean|v|`.
pub fn summary_error(got: &[f64], want: &[f32], n: usize) -> f64 {
    let scale = (want.get(2).copied().unwrap_or(0.0) as f64)
        .abs()
        .max(1e-30);
    let mean_abs = scale / n.max(1) as f64;
    got.iter()
        .zip(want)
        .enumerate()
        .map(|(i, (&g, &w))| {
            let w = w as f64;
            let denom = if i < 3 { scale } else { w.abs() + mean_abs };
            let e = (g - w).abs() / denom.max(1e-30);
            if e.is_nan() {
                f64::INFINITY
            } else {
                e
            }
        })
        .fold(0f64, f64::max)
}

/// One unit in the last place of an f32 of magnitude |x| (as f64).
pub fn f32_ulp(x: f32) -> f64 {
    let a = x.abs();
    if a == 0.0 || !a.is_finite() {
        return f32::MIN_POSITIVE as f64;
    }
    (f32::from_bits(a.to_bits() + 1) - a) as f64
}

/// The error of the CHANGE of a tensor over an SGD step: `got_after − before` against
/// `want_after − before`, where `want_after` is a stored summary of the reference's weights
/// after the step (or the full tensor). Weights barely move in one step, so comparing the
/// weights themselves would hide a wrong gradient. On the linear entries of a summary (the
/// sum and the samples), relative to `sum|ours_after − before|` plus a floor: what float32
/// can resolve, 2 ulp of the weight per element (summed for the sum entry), since both
/// stored and computed weights are rounded to f32 and the update rounds once more.
///
/// `got_after` is our full tensor (then it equals `ours_after`) or another run's result in
/// the same form as `want_after` (the reference's own float32 run); `ours_after` gives the
/// scale of the change, so both runs are measured with one yardstick.
pub fn change_error_of(
    before: &[f32],
    ours_after: &[f32],
    got_after: &[f32],
    want_after: &[f32],
) -> Result<f64, String> {
    let n = before.len();
    if ours_after.len() != n {
        return Err(format!("before has {n} values, after {}", ours_after.len()));
    }
    let sb = summary(before);
    if want_after.len() == n {
        if got_after.len() != n {
            return Err(format!("stored {} values, tensor has {n}", got_after.len()));
        }
        let d_got: Vec<f32> = got_after.iter().zip(before).map(|(a, b)| a - b).collect();
        let d_want: Vec<f32> = want_after.iter().zip(before).map(|(a, b)| a - b).collect();
        return Ok(errors(&d_got, &d_want).rel_l2);
    }
    if want_after.len() != sb.len() {
        return Err(format!(
            "stored {} values, tensor has {n} (summary of {})",
            want_after.len(),
            sb.len()
        ));
    }
    let sa: Vec<f64> = if got_after.len() == n {
        summary(got_after)
    } else if got_after.len() == sb.len() {
        got_after.iter().map(|&v| v as f64).collect()
    } else {
        return Err(format!(
            "{} values to compare, expected {n} or {}",
            got_after.len(),
            sb.len()
        ));
    };
    let n = n.max(1);
    let scale: f64 = ours_after
        .iter()
        .zip(before)
        .map(|(a, b)| ((*a as f64) - (*b as f64)).abs())
        .sum::<f64>()
        .max(1e-30);
    let quant_sum: f64 = before.iter().map(|&b| 2.0 * f32_ulp(b)).sum();
    let m = n.min(64);
    let mut worst = 0f64;
    for i in std::iter::once(0).chain(3..sa.len()) {
        let got = sa[i] - sb[i];
        let want = want_after[i] as f64 - sb[i];
        let (denom, floor) = if i == 0 {
            (scale, quant_sum)
        } else {
            let w = before[(i - 3) * n / m];
            (
                got.abs().max(want.abs()) + scale / n as f64,
                2.0 * f32_ulp(w),
            )
        };
        let e = ((got - want).abs() - floor).max(0.0) / denom;
        worst = worst.max(if e.is_nan() { f64::INFINITY } else { e });
    }
    Ok(worst)
}
