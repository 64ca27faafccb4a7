//! The parity yardstick: every compared tensor's error against the float64 reference, beside
//! the reference's OWN float32 error on it (`f32.<key>` in the fixture, see the golden
//! README).
//!
//! A tensor passes when our error is within
//!
//! ```text
//! tolerance = max(README tolerance, K × the reference's float32 error on the tensor's group)
//! ```
//!
//! where a group is a set of tensors that the same rounding drives (all parameter gradients of
//! a fixture, all momentum buffers of a step, ...). A single float32 run is one sample of a
//! chaotic error, so the group's LARGEST error is the yardstick; tensors whose float64 values
//! vanish (every |value| < 1e-12: a gradient that is zero in exact arithmetic, such as a
//! convolution bias followed by BatchNorm) measure rounding noise against noise, so they do
//! not set the group's yardstick but are held to their own (ratio ≤ K). Where the computation
//! is well conditioned the reference's float32 error is ~1e-7 and the README's tolerance
//! decides; where it is not (VAT's direction, a second step through BatchNorm over a few
//! voxels) no float32 engine can do better than the reference's own float32 run, and a
//! faithful one stays within K of it.
//!
//! Every row prints our error, the reference's float32 error, the tolerance and the ratio
//! ours / reference-float32; [`Parity::finish`] prints one summary line per fixture (the worst
//! ratio, the worst error / tolerance) and fails naming every tensor over its tolerance.

use super::{errors, summary, summary_error, Fixture};
use std::collections::BTreeMap;

/// How many times the reference's own float32 error a float32 engine may be off.
pub const K: f64 = 10.0;

/// Values whose magnitude is below this are zero in exact arithmetic (a vanishing gradient).
pub const VANISHING: f64 = 1e-12;

struct Row {
    name: String,
    group: String,
    ours: f64,
    reference: f64,
    readme_tol: f64,
    vanishing: bool,
}

/// The comparisons of one fixture.
pub struct Parity<'a> {
    fx: &'a Fixture,
    title: String,
    rows: Vec<Row>,
    failures: Vec<String>,
    notes: Vec<String>,
}

fn finite_or_inf(e: f64) -> f64 {
    if e.is_nan() {
        f64::INFINITY
    } else {
        e
    }
}

/// The error of `got` against `want`: relative L2 when both are the full tensor, the summary
/// measure ([`summary_error`]) when `want` is a stored summary of a tensor of `n` values and
/// `got` is either the full tensor or a summary.
fn tensor_error(got: &[f32], want: &[f32], n: usize) -> Result<f64, String> {
    if want.len() == n && got.len() == n {
        return Ok(errors(got, want).rel_l2);
    }
    let got: Vec<f64> = if got.len() == n {
        summary(got)
    } else {
        got.iter().map(|&v| v as f64).collect()
    };
    if got.len() != want.len() {
        return Err(format!(
            "{} values (or a summary of {}) to compare with {} stored",
            n,
            got.len(),
            want.len()
        ));
    }
    Ok(summary_error(&got, want, n))
}

fn vanishing(want: &[f32]) -> bool {
    want.iter().all(|w| (w.abs() as f64) < VANISHING)
}

impl<'a> Parity<'a> {
    pub fn new(fx: &'a Fixture) -> Parity<'a> {
        let stem = fx.path.file_stem().map(|s| s.to_string_lossy().to_string());
        let folder = fx
            .path
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().to_string());
        let title = match (folder, stem) {
            (Some(f), Some(s)) => format!("{f}/{s}"),
            _ => fx.path.display().to_string(),
        };
        Parity {
            fx,
            title,
            rows: vec![],
            failures: vec![],
            notes: vec![],
        }
    }

    /// The reference's float32 result for `key`: `f32.<key>`, or `key` itself where the
    /// fixture has none (the float32 run reproduced the float64 value exactly).
    pub fn reference_f32(&self, key: &str) -> Option<Vec<f32>> {
        let alt = format!("f32.{key}");
        if self.fx.has(&alt) {
            self.fx.f32(&alt).ok().map(|t| t.0)
        } else {
            self.fx.f32(key).ok().map(|t| t.0)
        }
    }

    /// The fixture's (float64) value of `key`, None when the fixture has no such tensor.
    pub fn stored(&self, key: &str) -> Option<Vec<f32>> {
        self.fx.f32(key).ok().map(|t| t.0)
    }

    fn want(&mut self, key: &str) -> Option<Vec<f32>> {
        match self.fx.f32(key) {
            Ok((v, _)) => Some(v),
            Err(e) => {
                self.failures.push(format!("{key}: {e}"));
                None
            }
        }
    }

    fn row(&mut self, group: &str, name: &str, ours: f64, reference: f64, tol: f64, van: bool) {
        self.rows.push(Row {
            name: name.to_string(),
            group: group.to_string(),
            ours: finite_or_inf(ours),
            reference: finite_or_inf(reference),
            readme_tol: tol,
            vanishing: van,
        });
    }

    /// Our tensor `ours` (the full tensor) against the fixture's `key` (full or summary) and
    /// the reference's `f32.<key>`.
    pub fn tensor(&mut self, group: &str, key: &str, ours: &[f32], tol: f64) {
        let Some(want) = self.want(key) else { return };
        let reference = self.reference_f32(key).unwrap_or_else(|| want.clone());
        self.tensor_vs(group, key, ours, &want, &reference, tol);
    }

    /// As [`Parity::tensor`] with the stored values given (`reference` in the same form as
    /// `want`: full or summary).
    pub fn tensor_vs(
        &mut self,
        group: &str,
        name: &str,
        ours: &[f32],
        want: &[f32],
        reference: &[f32],
        tol: f64,
    ) {
        let n = ours.len();
        match (
            tensor_error(ours, want, n),
            tensor_error(reference, want, n),
        ) {
            (Ok(o), Ok(r)) => self.row(group, name, o, r, tol, vanishing(want)),
            (Err(e), _) | (_, Err(e)) => self.failures.push(format!("{name}: {e}")),
        }
    }

    /// A scalar (a loss term) by relative error `|got − want| / max(|want|, 1e-6)`.
    pub fn scalar(&mut self, group: &str, key: &str, ours: f64, tol: f64) {
        let Some(want) = self.want(key) else { return };
        let reference = self.reference_f32(key).unwrap_or_else(|| want.clone());
        match (want.first(), reference.first()) {
            (Some(&w), Some(&r)) => self.scalar_vs(group, key, ours, w as f64, r as f64, tol),
            _ => self.failures.push(format!("{key}: empty tensor")),
        }
    }

    /// As [`Parity::scalar`] with the values given (metrics computed in float64: the
    /// reference's float32 value is the float64 one).
    pub fn scalar_vs(
        &mut self,
        group: &str,
        name: &str,
        ours: f64,
        want: f64,
        reference: f64,
        tol: f64,
    ) {
        let rel = |g: f64| (g - want).abs() / want.abs().max(1e-6);
        self.row(
            group,
            name,
            rel(ours),
            rel(reference),
            tol,
            want.abs() < VANISHING,
        );
    }

    /// The CHANGE of a tensor over an SGD step (`after − before`) against the fixture's `key`
    /// (a summary of the reference's after) minus `before`, measured as
    /// [`super::change_error_of`]; the reference's float32 change is measured the same way.
    pub fn change(&mut self, group: &str, key: &str, before: &[f32], after: &[f32], tol: f64) {
        let Some(want) = self.want(key) else { return };
        let reference = self.reference_f32(key).unwrap_or_else(|| want.clone());
        let ours = super::change_error_of(before, after, after, &want);
        let refe = super::change_error_of(before, after, &reference, &want);
        match (ours, refe) {
            (Ok(o), Ok(r)) => self.row(group, key, o, r, tol, false),
            (Err(e), _) | (_, Err(e)) => self.failures.push(format!("{key}: {e}")),
        }
    }

    /// A comparison outside the yardstick (an exact one: a label map, a resampled image).
    pub fn exact(&mut self, r: Result<(), String>) {
        if let Err(e) = r {
            self.failures.push(e);
        }
    }

    pub fn fail(&mut self, msg: impl Into<String>) {
        self.failures.push(msg.into());
    }

    /// A finding that is reported, not failed (a ranking flip of the reference's own float32
    /// run).
    pub fn note(&mut self, msg: impl Into<String>) {
        let msg = msg.into();
        println!("note: {msg}");
        self.notes.push(msg);
    }

    /// Print every row and the fixture's summary line; panic listing every tensor over its
    /// tolerance (and every other failure).
    pub fn finish(self) {
        let mut group_ref: BTreeMap<&str, f64> = BTreeMap::new();
        for r in &self.rows {
            let g = group_ref.entry(r.group.as_str()).or_insert(0.0);
            if !r.vanishing {
                *g = g.max(r.reference);
            }
        }
        let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &self.rows {
            *sizes.entry(r.group.as_str()).or_default() += 1;
        }
        for (g, y) in &group_ref {
            if sizes[g] > 1 {
                println!(
                    "group {g:<46} {} tensors, largest reference float32 error {y:.3e}: K × that = {:.3e}",
                    sizes[g],
                    K * y
                );
            }
        }
        let mut failures = self.failures.clone();
        // The worst ratio where the reference's float32 error sets the tolerance (there a ratio
        // above K fails), and the worst where the README's tolerance is the larger (there the
        // ratio compares two roundings far below the tolerance, and only the README decides).
        let mut worst_ratio: Option<(f64, &str)> = None;
        let mut worst_ratio_readme: Option<(f64, &str)> = None;
        let mut worst_frac: Option<(f64, &str)> = None;
        let mut with_ref = 0;
        println!(
            "{:<52} {:>10} {:>10} {:>10} {:>8}",
            "tensor", "ours", "ref-f32", "tolerance", "ratio"
        );
        for r in &self.rows {
            let yard = group_ref[r.group.as_str()].max(r.reference);
            let tol = r.readme_tol.max(K * yard);
            let ratio = (yard > 0.0).then(|| r.ours / yard);
            if r.reference > 0.0 {
                with_ref += 1;
            }
            let by = if K * yard > r.readme_tol {
                "K·ref"
            } else {
                "README"
            };
            println!(
                "{:<52} {:>10.3e} {:>10.3e} {:>10.3e} {:>8} ({by}{})",
                r.name,
                r.ours,
                r.reference,
                tol,
                ratio.map_or("-".to_string(), |x| format!("{x:.2}")),
                if r.vanishing { ", vanishing" } else { "" }
            );
            if let Some(x) = ratio {
                let slot = if K * yard > r.readme_tol {
                    &mut worst_ratio
                } else {
                    &mut worst_ratio_readme
                };
                if slot.is_none_or(|(w, _)| x > w) {
                    *slot = Some((x, &r.name));
                }
            }
            let frac = r.ours / tol;
            if worst_frac.is_none_or(|(w, _)| frac > w) {
                worst_frac = Some((frac, &r.name));
            }
            if r.ours > tol {
                failures.push(format!(
                    "{}: error {:.3e} over tolerance {tol:.3e} = max(README {:.0e}, K = {K} × reference float32 error {yard:.3e}); ratio ours / reference-float32 {}",
                    r.name,
                    r.ours,
                    r.readme_tol,
                    ratio.map_or("-".to_string(), |x| format!("{x:.2}"))
                ));
            }
        }
        let mut ratio_text = match worst_ratio {
            Some((x, name)) => format!("worst ratio ours / reference-float32 {x:.2} at {name}"),
            None => "no tensor whose tolerance the reference's float32 error sets".to_string(),
        };
        if let Some((x, name)) = worst_ratio_readme {
            ratio_text.push_str(&format!(
                " (within the README's tolerance elsewhere: ratio up to {x:.2}, at {name})"
            ));
        }
        let frac_text = match worst_frac {
            Some((x, name)) => format!("worst error / tolerance {x:.2} at {name}"),
            None => "no tensor compared".to_string(),
        };
        println!(
            "{}: {ratio_text} (K = {K}); {frac_text}; {} tensors, {with_ref} with a reference float32 error; {}{}",
            self.title,
            self.rows.len(),
            if failures.is_empty() { "PASS" } else { "FAIL" },
            if self.notes.is_empty() {
                String::new()
            } else {
                format!(" ({} notes)", self.notes.len())
            }
        );
        assert!(
            failures.is_empty(),
            "golden mismatch in {}:\n  {}",
            self.title,
            failures.join("\n  ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{tensor_error, Parity};
    use crate::golden::Fixture;

    /// A fixture file with `want` and the reference's float32 `f32.want` (for each name).
    fn fixture(tensors: &[(&str, Vec<f32>)]) -> (tempfile::TempDir, Fixture) {
        use safetensors::tensor::TensorView;
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<(String, Vec<u8>, usize)> = tensors
            .iter()
            .map(|(n, v)| (n.to_string(), bytemuck::cast_slice(v).to_vec(), v.len()))
            .collect();
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(n, b, len)| {
                (
                    n.clone(),
                    TensorView::new(safetensors::Dtype::F32, vec![*len], b).unwrap(),
                )
            })
            .collect();
        let path = dir.path().join("t.safetensors");
        safetensors::serialize_to_file(views, None, &path).unwrap();
        let fx = Fixture::open(&path).unwrap();
        (dir, fx)
    }

    fn passes(f: impl FnOnce() + std::panic::UnwindSafe) -> bool {
        std::panic::catch_unwind(f).is_ok()
    }

    #[test]
    fn tolerance_is_k_times_the_groups_largest_reference_error() {
        let want = vec![1.0f32, 2.0, 3.0, 4.0];
        // The reference's float32 run is 1e-3 off on `a`, exact on `b`; `c` vanishes and its
        // reference error (noise against noise) must not set the group's yardstick.
        let a32: Vec<f32> = want.iter().map(|v| v * 1.001).collect();
        let tiny = vec![1e-15f32, -1e-15, 0.0, 1e-15];
        let tiny32 = vec![1e-9f32, -1e-9, 0.0, 1e-9];
        let (_d, fx) = fixture(&[
            ("a", want.clone()),
            ("f32.a", a32),
            ("b", want.clone()),
            ("c", tiny.clone()),
            ("f32.c", tiny32),
        ]);
        let off = |e: f32| want.iter().map(|v| v * (1.0 + e)).collect::<Vec<f32>>();
        let run = |eb: f32, c: Vec<f32>| {
            let mut p = Parity::new(&fx);
            p.tensor("g", "a", &off(0.0), 1e-5);
            p.tensor("g", "b", &off(eb), 1e-5);
            p.tensor("g", "c", &c, 1e-5);
            p.finish();
        };
        // b: 5e-3 is within K × 1e-3 (the group's largest), 2e-2 is not.
        assert!(passes(|| run(5e-3, vec![2e-9, -2e-9, 0.0, 1e-9])));
        assert!(!passes(|| run(2e-2, vec![2e-9, -2e-9, 0.0, 1e-9])));
        // c is held to its own reference noise: 10x over it fails even though b passes.
        assert!(!passes(|| run(0.0, vec![1e-6, -1e-6, 0.0, 1e-6])));
        // Alone in its group, b gets the README's tolerance.
        let solo = |eb: f32| {
            let mut p = Parity::new(&fx);
            p.tensor("b", "b", &off(eb), 1e-5);
            p.finish();
        };
        assert!(passes(|| solo(5e-6)));
        assert!(!passes(|| solo(5e-3)));
    }

    #[test]
    fn full_and_summary_errors() {
        let want = [1.0f32, 2.0, 3.0];
        assert_eq!(tensor_error(&want, &want, 3).unwrap(), 0.0);
        let e = tensor_error(&[1.0, 2.0, 3.1], &want, 3).unwrap();
        assert!((e - 0.1 / 14f64.sqrt()).abs() < 1e-6);
        // 100 values against a stored summary of them.
        let v: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let s: Vec<f32> = super::summary(&v).iter().map(|&x| x as f32).collect();
        assert!(tensor_error(&v, &s, 100).unwrap() < 1e-7);
        let mut w = v.clone();
        w[0] += 10.0;
        assert!(tensor_error(&w, &s, 100).unwrap() > 1e-3);
        // a summary against a summary
        assert!(tensor_error(&s, &s, 100).unwrap() == 0.0);
    }
}
