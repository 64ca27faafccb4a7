//! The prototype memory against the reference: which features each run keeps. The memory is
//! a ranking (the 32 lowest selector scores of a class), so two near-equal scores may order
//! differently under other rounding and the memory then holds other rows: a flip. Where the
//! reference's own float32 run flips against its float64 run, that is reported and the rest
//! of the step is compared; where only ours flips, the comparison fails with the two scores
//! that decided it.

use super::parity::Parity;

/// How our memory of one class was ranked: the candidate rows `[n, dim]`, their selector
/// scores, and the candidates kept, in the memory's order.
pub struct Ranking {
    pub candidates: Vec<f32>,
    pub scores: Vec<f32>,
    pub kept: Vec<u32>,
}

/// For each row of `a` (`[ra, dim]`), the index of the nearest row of `b` (Euclidean).
pub fn nearest_rows(a: &[f32], b: &[f32], dim: usize) -> Vec<usize> {
    let dim = dim.max(1);
    a.chunks_exact(dim)
        .map(|ra| {
            b.chunks_exact(dim)
                .enumerate()
                .map(|(j, rb)| {
                    let d: f64 = ra
                        .iter()
                        .zip(rb)
                        .map(|(x, y)| ((*x as f64) - (*y as f64)).powi(2))
                        .sum();
                    (j, d)
                })
                .min_by(|x, y| x.1.total_cmp(&y.1))
                .map_or(usize::MAX, |(j, _)| j)
        })
        .collect()
}

/// Whether `a` and `b` hold the same rows in the same order: as many rows, and each row of `a`
/// nearest to the row of `b` at the same position.
pub fn same_rows(a: &[f32], b: &[f32], dim: usize) -> bool {
    a.len() == b.len()
        && nearest_rows(a, b, dim)
            .iter()
            .enumerate()
            .all(|(i, &j)| i == j)
}

/// Where our ranking parts from the reference's: the first rank at which the kept candidate
/// differs, with our scores of the two candidates.
pub fn describe_flip(ours: &[f32], want: &[f32], dim: usize, ranking: Option<&Ranking>) -> String {
    let (ro, rw) = (ours.len() / dim.max(1), want.len() / dim.max(1));
    let Some(rk) = ranking else {
        return format!(
            "we keep {ro} rows, the reference {rw}, and the rows differ (no ranking: every candidate was kept)"
        );
    };
    let theirs = nearest_rows(want, &rk.candidates, dim);
    for (p, (&i, &j)) in rk.kept.iter().zip(&theirs).enumerate() {
        let (i, j) = (i as usize, j);
        if i != j {
            let (si, sj) = (rk.scores[i], rk.scores.get(j).copied().unwrap_or(f32::NAN));
            return format!(
                "at rank {p} we keep candidate {i} (our score {si:.9e}) where the reference keeps candidate {j} (our score {sj:.9e}); the two scores differ by {:.3e}",
                (si - sj).abs()
            );
        }
    }
    format!(
        "we keep {ro} rows, the reference {rw}; the first {} agree",
        ro.min(rw)
    )
}

impl Parity<'_> {
    /// The memory of one class: our rows `ours` (`[rows, dim]`, None when unset) against the
    /// fixture's `key` and the reference's float32 `f32.<key>`.
    pub fn memory(
        &mut self,
        group: &str,
        key: &str,
        ours: Option<&[f32]>,
        dim: usize,
        ranking: Option<&Ranking>,
        tol: f64,
    ) {
        let want = self.stored(key);
        let (ours, want) = match (ours, want) {
            (None, None) => return,
            (Some(o), Some(w)) => (o, w),
            (o, w) => {
                self.fail(format!(
                    "{key}: ours {}, reference {}",
                    if o.is_some() { "set" } else { "unset" },
                    if w.is_some() { "set" } else { "unset" }
                ));
                return;
            }
        };
        let reference = self.reference_f32(key).unwrap_or_else(|| want.clone());
        let ref_flips = !same_rows(&reference, &want, dim);
        let ours_flips = !same_rows(ours, &want, dim);
        if ref_flips {
            self.note(format!(
                "{key}: the reference's float32 run keeps other prototypes than its float64 run (a ranking flip between near-equal selector scores); ours {}; the memory is not compared, the rest of the step is",
                if ours_flips { "differs too" } else { "matches the float64 run" }
            ));
        } else if ours_flips {
            self.fail(format!(
                "{key}: our memory keeps other prototypes than the reference (whose float32 run does not): {}",
                describe_flip(ours, &want, dim, ranking)
            ));
        } else {
            self.tensor_vs(group, key, ours, &want, &reference, tol);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_match_by_nearest() {
        let a = [0.0f32, 0.0, 1.0, 1.0, 5.0, 5.0];
        let b = [0.01f32, 0.0, 1.0, 1.01, 5.0, 5.0];
        assert!(same_rows(&a, &b, 2));
        let swapped = [1.0f32, 1.0, 0.0, 0.0, 5.0, 5.0];
        assert!(!same_rows(&swapped, &b, 2));
        assert!(!same_rows(&a[..4], &b, 2));
    }

    #[test]
    fn flip_names_the_two_scores() {
        let cands = [0.0f32, 0.0, 1.0, 1.0, 2.0, 2.0];
        let rk = Ranking {
            candidates: cands.to_vec(),
            scores: vec![0.1, 0.30001, 0.3],
            kept: vec![0, 1],
        };
        let ours = [0.0f32, 0.0, 1.0, 1.0];
        let want = [0.0f32, 0.0, 2.0, 2.0];
        let s = describe_flip(&ours, &want, 2, Some(&rk));
        assert!(
            s.contains("rank 1") && s.contains("candidate 1") && s.contains("candidate 2"),
            "{s}"
        );
    }
}
