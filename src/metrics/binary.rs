//! Overlap and surface-distance metrics of binary masks, exactly as `medpy.metric.binary`
//! computes them (what SS-Net reports): `dc`, `jc`, `hd95`, `asd`, `assd`, `hd`.
//!
//! Masks are `&[bool]`, row-major (C order) over `dims` (any number of dimensions, last index
//! fastest). `spacing` is the voxel size per axis in the same order as `dims`; `None` means
//! voxel units (what the paper reports: SS-Net passes no spacing to medpy).
//!
//! Surface distances (medpy's `__surface_distances`): the border of a mask is
//! `mask XOR binary_erosion(mask)` with the cross structure (connectivity 1), the outside of
//! the array counting as background; the distances from A to B are the Euclidean distance
//! transform (with spacing) of NOT border(B), read at the voxels of border(A).
//!
//! # Empty masks
//! medpy raises on an empty mask in every surface metric. The functions [`hd95`], [`asd`],
//! [`assd`], [`hausdorff`] and [`surface_distances`] return an error likewise. [`evaluate`]
//! applies a scoring rule instead:
//! - empty prediction (whatever the ground truth): all metrics 0, SS-Net's rule
//!   (`calculate_metric_percase` returns `0, 0, 0, 0`);
//! - non-empty prediction, empty ground truth (undefined in the reference, which crashes):
//!   Dice 0 and Jaccard 0 (no overlap is possible; medpy's `dc` also gives 0), and every
//!   distance NaN (there is no ground-truth surface to measure from). Aggregations must skip
//!   NaN; `ssnet eval` does, and reports how many values it skipped.

use super::edt::squared_edt;
use crate::error::{Error, Result};

/// The metrics of one prediction against one ground truth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BinaryMetrics {
    /// Dice coefficient `2|P∩G| / (|P|+|G|)`.
    pub dice: f64,
    /// Jaccard index `|P∩G| / |P∪G|`.
    pub jaccard: f64,
    /// 95th percentile of both directed surface-distance sets pooled (medpy `hd95`).
    pub hd95: f64,
    /// Mean directed surface distance prediction → ground truth (medpy `asd`, SS-Net's ASD).
    pub asd: f64,
    /// Mean of the two directed means (medpy `assd`).
    pub assd: f64,
    /// Hausdorff distance: the largest surface distance either way (medpy `hd`).
    pub hd: f64,
}

impl BinaryMetrics {
    /// SS-Net's score for an empty prediction.
    pub const ZERO: BinaryMetrics = BinaryMetrics {
        dice: 0.0,
        jaccard: 0.0,
        hd95: 0.0,
        asd: 0.0,
        assd: 0.0,
        hd: 0.0,
    };

    /// The values in the order of [`BinaryMetrics::NAMES`].
    pub fn values(&self) -> [f64; 6] {
        [
            self.dice,
            self.jaccard,
            self.hd95,
            self.asd,
            self.assd,
            self.hd,
        ]
    }

    /// Column names, in the order of [`BinaryMetrics::values`].
    pub const NAMES: [&'static str; 6] = ["dice", "jaccard", "hd95", "asd", "assd", "hd"];
}

/// Check that the masks fill `dims` and that `spacing`, if any, is positive and finite.
fn check_shapes(
    a: &[bool],
    b: &[bool],
    dims: &[usize],
    spacing: Option<&[f64]>,
) -> Result<Vec<f64>> {
    let n: usize = dims.iter().product();
    if dims.is_empty() || a.len() != n || b.len() != n {
        return Err(Error::msg(format!(
            "metrics: masks of {} and {} voxels for dims {dims:?} ({n} voxels)",
            a.len(),
            b.len()
        )));
    }
    match spacing {
        None => Ok(vec![1.0; dims.len()]),
        Some(s) => {
            if s.len() != dims.len() || s.iter().any(|&v| !(v.is_finite() && v > 0.0)) {
                return Err(Error::msg(format!("metrics: spacing {s:?} does not fit dims {dims:?} (one positive value per axis)")));
            }
            Ok(s.to_vec())
        }
    }
}

fn count(m: &[bool]) -> usize {
    m.iter().filter(|&&v| v).count()
}

/// Dice coefficient (medpy `dc`); 0 when both masks are empty, as medpy.
pub fn dice(pred: &[bool], gt: &[bool]) -> Result<f64> {
    if pred.len() != gt.len() {
        return Err(Error::msg(format!(
            "dice: masks of {} and {} voxels",
            pred.len(),
            gt.len()
        )));
    }
    let (mut inter, mut np, mut ng) = (0usize, 0usize, 0usize);
    for (&p, &g) in pred.iter().zip(gt) {
        inter += (p && g) as usize;
        np += p as usize;
        ng += g as usize;
    }
    Ok(if np + ng == 0 {
        0.0
    } else {
        2.0 * inter as f64 / (np + ng) as f64
    })
}

/// Jaccard index (medpy `jc`); 0 when both masks are empty (medpy divides by zero).
pub fn jaccard(pred: &[bool], gt: &[bool]) -> Result<f64> {
    if pred.len() != gt.len() {
        return Err(Error::msg(format!(
            "jaccard: masks of {} and {} voxels",
            pred.len(),
            gt.len()
        )));
    }
    let (mut inter, mut union) = (0usize, 0usize);
    for (&p, &g) in pred.iter().zip(gt) {
        inter += (p && g) as usize;
        union += (p || g) as usize;
    }
    Ok(if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    })
}

/// The border of `mask`: `mask XOR binary_erosion(mask, cross)`, the outside of the array
/// counting as background (scipy's default `border_value=0`). A voxel of the mask is on the
/// border when one of its 2·ndim face neighbours is background or outside the array.
pub fn border(mask: &[bool], dims: &[usize]) -> Vec<bool> {
    let nd = dims.len();
    let mut strides = vec![1usize; nd];
    for a in (0..nd.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * dims[a + 1];
    }
    let mut out = vec![false; mask.len()];
    let mut coord = vec![0usize; nd];
    for (i, o) in out.iter_mut().enumerate() {
        if mask[i] {
            let mut edge = false;
            for a in 0..nd {
                let c = coord[a];
                if c == 0 || c + 1 == dims[a] || !mask[i - strides[a]] || !mask[i + strides[a]] {
                    edge = true;
                    break;
                }
            }
            *o = edge;
        }
        // Odometer increment of the coordinate (last axis fastest).
        for a in (0..nd).rev() {
            coord[a] += 1;
            if coord[a] < dims[a] {
                break;
            }
            coord[a] = 0;
        }
    }
    out
}

/// Both masks cropped to the bounding box of their union (with the crop's dims). The EDT of
/// a border restricted to that box is exact at every border voxel: all sites and all query
/// points lie inside it, and a voxel outside the box is background in both masks, so the
/// erosion sees the same neighbourhood.
fn crop_to_union(a: &[bool], b: &[bool], dims: &[usize]) -> (Vec<bool>, Vec<bool>, Vec<usize>) {
    let nd = dims.len();
    let mut lo = dims.to_vec();
    let mut hi = vec![0usize; nd];
    let mut coord = vec![0usize; nd];
    for i in 0..a.len() {
        if a[i] || b[i] {
            for k in 0..nd {
                lo[k] = lo[k].min(coord[k]);
                hi[k] = hi[k].max(coord[k] + 1);
            }
        }
        for k in (0..nd).rev() {
            coord[k] += 1;
            if coord[k] < dims[k] {
                break;
            }
            coord[k] = 0;
        }
    }
    let cdims: Vec<usize> = (0..nd).map(|k| hi[k].saturating_sub(lo[k])).collect();
    let cn: usize = cdims.iter().product();
    if cn == a.len() || cn == 0 {
        return (a.to_vec(), b.to_vec(), dims.to_vec());
    }
    let mut strides = vec![1usize; nd];
    for k in (0..nd.saturating_sub(1)).rev() {
        strides[k] = strides[k + 1] * dims[k + 1];
    }
    let (mut ca, mut cb) = (Vec::with_capacity(cn), Vec::with_capacity(cn));
    let mut c = vec![0usize; nd];
    for _ in 0..cn {
        let src: usize = (0..nd).map(|k| (lo[k] + c[k]) * strides[k]).sum();
        ca.push(a[src]);
        cb.push(b[src]);
        for k in (0..nd).rev() {
            c[k] += 1;
            if c[k] < cdims[k] {
                break;
            }
            c[k] = 0;
        }
    }
    (ca, cb, cdims)
}

/// Directed distances from the border voxels of `from` to the border of `to`, in raster order
/// of the `from` border voxels. Both borders are given (already cropped).
fn directed(from_border: &[bool], to_border: &[bool], dims: &[usize], spacing: &[f64]) -> Vec<f64> {
    let d2 = squared_edt(to_border, dims, spacing);
    from_border
        .iter()
        .zip(&d2)
        .filter(|(&f, _)| f)
        .map(|(_, &d)| d.sqrt())
        .collect()
}

/// Both directed surface-distance sets: (a → b, b → a). Errors when a mask is empty.
fn both_directions(
    a: &[bool],
    b: &[bool],
    dims: &[usize],
    spacing: Option<&[f64]>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let sp = check_shapes(a, b, dims, spacing)?;
    if count(a) == 0 {
        return Err(Error::msg(
            "surface distance: the first mask (prediction) is empty",
        ));
    }
    if count(b) == 0 {
        return Err(Error::msg(
            "surface distance: the second mask (ground truth) is empty",
        ));
    }
    let (ca, cb, cdims) = crop_to_union(a, b, dims);
    let ba = border(&ca, &cdims);
    let bb = border(&cb, &cdims);
    Ok((
        directed(&ba, &bb, &cdims, &sp),
        directed(&bb, &ba, &cdims, &sp),
    ))
}

/// Distances from every border voxel of `a` to the nearest border voxel of `b` (medpy's
/// `__surface_distances(a, b)`), in raster order of a's border voxels.
pub fn surface_distances(
    a: &[bool],
    b: &[bool],
    dims: &[usize],
    spacing: Option<&[f64]>,
) -> Result<Vec<f64>> {
    let sp = check_shapes(a, b, dims, spacing)?;
    if count(a) == 0 || count(b) == 0 {
        return Err(Error::msg("surface distance: a mask is empty"));
    }
    let (ca, cb, cdims) = crop_to_union(a, b, dims);
    Ok(directed(
        &border(&ca, &cdims),
        &border(&cb, &cdims),
        &cdims,
        &sp,
    ))
}

/// `numpy.percentile(values, q)` with the default linear method, reproduced operation for
/// operation: numpy's `_compute_virtual_index` with alpha = beta = 1 (`n·p + (1 - p) - 1`,
/// p = q/100) and its `_lerp`, which interpolates down from the upper value when the weight
/// is ≥ 0.5. Reorders `values`. NaN for an empty slice.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let p = q / 100.0;
    // numpy's linear method is Hyndman & Fan's type 7: alpha = beta = 1.
    const ALPHA: f64 = 1.0;
    const BETA: f64 = 1.0;
    let virtual_index = n as f64 * p + (ALPHA + p * (1.0 - ALPHA - BETA)) - 1.0;
    let virtual_index = virtual_index.clamp(0.0, (n - 1) as f64);
    let prev = virtual_index.floor();
    let gamma = virtual_index - prev;
    let lo_i = prev as usize;
    let hi_i = (lo_i + 1).min(n - 1);
    // Selection instead of a full sort: O(n).
    let (_, lo, rest) = values.select_nth_unstable_by(lo_i, f64::total_cmp);
    let lo = *lo;
    let hi = if hi_i == lo_i {
        lo
    } else {
        rest.iter().copied().fold(f64::INFINITY, f64::min)
    };
    let diff = hi - lo;
    if gamma >= 0.5 {
        hi - diff * (1.0 - gamma)
    } else {
        lo + diff * gamma
    }
}

fn mean(v: &[f64]) -> f64 {
    // numpy's mean uses pairwise summation; at 1e-6 relative a plain f64 sum is the same.
    v.iter().sum::<f64>() / v.len() as f64
}

/// 95th-percentile Hausdorff distance (medpy `hd95`). Errors on an empty mask.
pub fn hd95(pred: &[bool], gt: &[bool], dims: &[usize], spacing: Option<&[f64]>) -> Result<f64> {
    let (mut pg, gp) = both_directions(pred, gt, dims, spacing)?;
    pg.extend_from_slice(&gp);
    Ok(percentile(&mut pg, 95.0))
}

/// Average surface distance, directed prediction → ground truth (medpy `asd`, SS-Net's ASD).
pub fn asd(pred: &[bool], gt: &[bool], dims: &[usize], spacing: Option<&[f64]>) -> Result<f64> {
    Ok(mean(&surface_distances(pred, gt, dims, spacing)?))
}

/// Average symmetric surface distance (medpy `assd`): mean of the two directed means.
pub fn assd(pred: &[bool], gt: &[bool], dims: &[usize], spacing: Option<&[f64]>) -> Result<f64> {
    let (pg, gp) = both_directions(pred, gt, dims, spacing)?;
    Ok((mean(&pg) + mean(&gp)) / 2.0)
}

/// Hausdorff distance (medpy `hd`): the largest surface distance either way.
pub fn hausdorff(
    pred: &[bool],
    gt: &[bool],
    dims: &[usize],
    spacing: Option<&[f64]>,
) -> Result<f64> {
    let (pg, gp) = both_directions(pred, gt, dims, spacing)?;
    Ok(pg
        .iter()
        .chain(&gp)
        .copied()
        .fold(f64::NEG_INFINITY, f64::max))
}

/// All metrics of one case with the empty-mask rules of the module docs; the two distance
/// transforms are computed once for all surface metrics.
pub fn evaluate(
    pred: &[bool],
    gt: &[bool],
    dims: &[usize],
    spacing: Option<&[f64]>,
) -> Result<BinaryMetrics> {
    check_shapes(pred, gt, dims, spacing)?;
    if count(pred) == 0 {
        return Ok(BinaryMetrics::ZERO);
    }
    let dice = dice(pred, gt)?;
    let jaccard = jaccard(pred, gt)?;
    if count(gt) == 0 {
        let nan = f64::NAN;
        return Ok(BinaryMetrics {
            dice,
            jaccard,
            hd95: nan,
            asd: nan,
            assd: nan,
            hd: nan,
        });
    }
    let (pg, gp) = both_directions(pred, gt, dims, spacing)?;
    let asd = mean(&pg);
    let assd = (asd + mean(&gp)) / 2.0;
    let hd = pg
        .iter()
        .chain(&gp)
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let mut pooled = pg;
    pooled.extend_from_slice(&gp);
    let hd95 = percentile(&mut pooled, 95.0);
    Ok(BinaryMetrics {
        dice,
        jaccard,
        hd95,
        asd,
        assd,
        hd,
    })
}

/// The mask of one class of a label map.
pub fn class_mask(labels: &[u8], class: u8) -> Vec<bool> {
    labels.iter().map(|&l| l == class).collect()
}

/// The foreground (non-zero) mask of a label map, as medpy casts its inputs to bool.
pub fn foreground(labels: &[u8]) -> Vec<bool> {
    labels.iter().map(|&l| l != 0).collect()
}

/// Per-class metrics of multi-label maps: for each class `c` of `classes`, [`evaluate`] of
/// `(pred == c, gt == c)`. A class missing from the prediction scores 0 everywhere (SS-Net's
/// ACDC rule); a class missing from the ground truth follows the empty-gt rule.
pub fn per_class(
    pred: &[u8],
    gt: &[u8],
    dims: &[usize],
    spacing: Option<&[f64]>,
    classes: &[u8],
) -> Result<Vec<(u8, BinaryMetrics)>> {
    classes
        .iter()
        .map(|&c| {
            Ok((
                c,
                evaluate(&class_mask(pred, c), &class_mask(gt, c), dims, spacing)?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy() {
        // numpy.percentile([...], 95) values computed by hand from its formula.
        let mut v = vec![1.0, 2.0, 3.0, 4.0];
        // virtual index 2.85 → 3 + 0.85·1
        assert!((percentile(&mut v, 95.0) - 3.85).abs() < 1e-12);
        let mut v: Vec<f64> = (0..21).map(|x| x as f64).collect();
        assert_eq!(percentile(&mut v, 95.0), 19.0);
        assert_eq!(percentile(&mut [5.0], 95.0), 5.0);
        assert!(percentile(&mut [], 95.0).is_nan());
    }

    #[test]
    fn border_counts_outside_as_background() {
        // A full 3x3 square: everything but the centre is border; the centre is interior.
        let m = vec![true; 9];
        let b = border(&m, &[3, 3]);
        assert_eq!(b.iter().filter(|&&x| x).count(), 8);
        assert!(!b[4]);
        // A full 1x3 line: all border (edges of the array).
        assert!(border(&[true; 3], &[1, 3]).iter().all(|&x| x));
    }

    #[test]
    fn identical_masks_and_shift() {
        let dims = [4usize, 6];
        let mut a = vec![false; 24];
        for y in 1..3 {
            for x in 1..4 {
                a[y * 6 + x] = true;
            }
        }
        let m = evaluate(&a, &a, &dims, None).unwrap();
        assert_eq!(
            (m.dice, m.jaccard, m.hd95, m.asd, m.hd),
            (1.0, 1.0, 0.0, 0.0, 0.0)
        );
        // Shift by one column, spacing 2 along x: every distance is 0 or 2.
        let mut b = vec![false; 24];
        for y in 1..3 {
            for x in 2..5 {
                b[y * 6 + x] = true;
            }
        }
        let m = evaluate(&a, &b, &dims, Some(&[1.0, 2.0])).unwrap();
        assert!((m.dice - 2.0 * 4.0 / 12.0).abs() < 1e-12);
        assert!((m.jaccard - 4.0 / 8.0).abs() < 1e-12);
        assert_eq!(m.hd, 2.0);
        // Only the first column of a (2 of 6 border voxels) is away from b's border.
        assert!((m.asd - 2.0 * 2.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn empty_rules() {
        let dims = [2usize, 2];
        let none = [false; 4];
        let some = [true, false, false, false];
        assert_eq!(
            evaluate(&none, &some, &dims, None).unwrap(),
            BinaryMetrics::ZERO
        );
        assert_eq!(
            evaluate(&none, &none, &dims, None).unwrap(),
            BinaryMetrics::ZERO
        );
        let m = evaluate(&some, &none, &dims, None).unwrap();
        assert_eq!((m.dice, m.jaccard), (0.0, 0.0));
        assert!(m.hd95.is_nan() && m.asd.is_nan() && m.assd.is_nan() && m.hd.is_nan());
        assert!(hd95(&none, &some, &dims, None).is_err());
        assert!(asd(&some, &none, &dims, None).is_err());
        assert!(evaluate(&some, &none, &[3, 2], None).is_err());
        assert!(evaluate(&some, &some, &dims, Some(&[1.0, 0.0])).is_err());
    }

    #[test]
    fn per_class_missing_class_scores_zero() {
        let gt = [1u8, 1, 2, 2, 3, 0];
        let pred = [1u8, 1, 2, 0, 0, 0];
        let r = per_class(&pred, &gt, &[6], None, &[1, 2, 3]).unwrap();
        assert_eq!(r[0].1.dice, 1.0);
        assert!((r[1].1.dice - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r[2].1, BinaryMetrics::ZERO);
    }
}
