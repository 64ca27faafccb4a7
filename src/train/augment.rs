//! The reference's training augmentations, seeded (one [`Pcg32`] stream for the whole run).
//!
//! Arrays are row-major; a 2-D `[H, W]` array is handled as `[H, W, 1]`.
//!
//! - [`rot90`] / [`flip`]: numpy's `rot90(m, k)` (axes 0 and 1) and `flip(m, axis)`.
//! - LA ([`la_sample`]): `RandomRotFlip` (k ∈ 0..3, axis ∈ {0, 1}) then `RandomCrop`. The crop
//!   reproduces two quirks of the reference: when ANY side is <= the patch, EVERY side `s` is
//!   zero-padded on both ends by `max((patch - s) // 2 + 3, 0)` (Python floor division, so a
//!   side one voxel longer than the patch still gets 2 voxels per end); and the start is drawn
//!   from `[0, size - patch)` (numpy `randint(0, size - patch)`), so the last position, which
//!   would put the crop flush with the far end, is never drawn.
//! - ACDC ([`acdc_sample`]): `RandomGenerator`: with probability 0.5 rot90 + flip, else with
//!   probability 0.5 a rotation by an integer angle in `[-20, 20)` ([`rotate_nearest`]:
//!   `scipy.ndimage.rotate(order=0, reshape=False)`), then image and label zoomed to the patch
//!   with `scipy.ndimage.zoom(order=0)` semantics ([`crate::metrics::zoom_nearest`]); the
//!   reference zooms the image with order 0 too.

use crate::error::Result;
use crate::metrics::zoom_nearest;
use rand::Rng;
use rand_pcg::Pcg32;

/// numpy `rot90(m, k, axes=(0, 1))` of a `[a, b, c]` array: returns the data and its shape
/// (`[b, a, c]` for odd `k`).
pub fn rot90<T: Copy>(m: &[T], shape: [usize; 3], k: usize) -> (Vec<T>, [usize; 3]) {
    let [a, b, c] = shape;
    let k = k % 4;
    let out_shape = if k % 2 == 1 { [b, a, c] } else { shape };
    let [oa, ob, _] = out_shape;
    let mut out = Vec::with_capacity(m.len());
    for i in 0..oa {
        for j in 0..ob {
            // Source (row, column) of output (i, j).
            let (si, sj) = match k {
                0 => (i, j),
                1 => (j, b - 1 - i),
                2 => (a - 1 - i, b - 1 - j),
                _ => (a - 1 - j, i),
            };
            let base = (si * b + sj) * c;
            out.extend_from_slice(&m[base..base + c]);
        }
    }
    (out, out_shape)
}

/// numpy `flip(m, axis)` of a `[a, b, c]` array, axis 0, 1 or 2.
pub fn flip<T: Copy>(m: &[T], shape: [usize; 3], axis: usize) -> Vec<T> {
    let [a, b, c] = shape;
    let mut out = Vec::with_capacity(m.len());
    for i in 0..a {
        for j in 0..b {
            for l in 0..c {
                let (si, sj, sl) = match axis {
                    0 => (a - 1 - i, j, l),
                    1 => (i, b - 1 - j, l),
                    _ => (i, j, c - 1 - l),
                };
                out.push(m[(si * b + sj) * c + sl]);
            }
        }
    }
    out
}

/// The reference's `random_rot_flip` on image and label: `k = randint(0, 4)`, then
/// `axis = randint(0, 2)`.
pub fn random_rot_flip<T: Copy, U: Copy>(
    img: &[T],
    lab: &[U],
    shape: [usize; 3],
    rng: &mut Pcg32,
) -> (Vec<T>, Vec<U>, [usize; 3]) {
    let k = rng.random_range(0..4usize);
    let (i, s) = rot90(img, shape, k);
    let (l, _) = rot90(lab, shape, k);
    let axis = rng.random_range(0..2usize);
    (flip(&i, s, axis), flip(&l, s, axis), s)
}

/// Per-axis padding of `RandomCrop`: none unless some side is <= the patch; then every side
/// gets `max((patch - size) // 2 + 3, 0)` on both ends (floor division).
pub fn crop_padding(shape: [usize; 3], patch: [usize; 3]) -> [usize; 3] {
    if (0..3).all(|i| shape[i] > patch[i]) {
        return [0; 3];
    }
    let mut p = [0; 3];
    for i in 0..3 {
        let d = patch[i] as i64 - shape[i] as i64;
        p[i] = (d.div_euclid(2) + 3).max(0) as usize;
    }
    p
}

/// Zero-pad `pad[i]` on both ends of axis i.
pub fn pad<T: Copy + Default>(m: &[T], shape: [usize; 3], pad: [usize; 3]) -> (Vec<T>, [usize; 3]) {
    if pad == [0; 3] {
        return (m.to_vec(), shape);
    }
    let out_shape = [
        shape[0] + 2 * pad[0],
        shape[1] + 2 * pad[1],
        shape[2] + 2 * pad[2],
    ];
    let mut out = vec![T::default(); out_shape.iter().product()];
    for i in 0..shape[0] {
        for j in 0..shape[1] {
            let src = (i * shape[1] + j) * shape[2];
            let dst = ((i + pad[0]) * out_shape[1] + j + pad[1]) * out_shape[2] + pad[2];
            out[dst..dst + shape[2]].copy_from_slice(&m[src..src + shape[2]]);
        }
    }
    (out, out_shape)
}

/// The `patch`-sized block of `m` starting at `start`.
pub fn crop<T: Copy>(m: &[T], shape: [usize; 3], start: [usize; 3], patch: [usize; 3]) -> Vec<T> {
    let mut out = Vec::with_capacity(patch.iter().product());
    for i in start[0]..start[0] + patch[0] {
        for j in start[1]..start[1] + patch[1] {
            let s = (i * shape[1] + j) * shape[2] + start[2];
            out.extend_from_slice(&m[s..s + patch[2]]);
        }
    }
    out
}

/// numpy `randint(0, size - patch)`: a start in `[0, size - patch)`. After the padding rule
/// every side is longer than the patch, so the range is never empty (0 if it were).
pub fn crop_start(size: usize, patch: usize, rng: &mut Pcg32) -> usize {
    if size > patch {
        rng.random_range(0..size - patch)
    } else {
        0
    }
}

/// `RandomCrop`: pad (quirk above), then a random `patch` block; starts drawn x, y, z.
pub fn random_crop<T: Copy + Default, U: Copy + Default>(
    img: &[T],
    lab: &[U],
    shape: [usize; 3],
    patch: [usize; 3],
    rng: &mut Pcg32,
) -> (Vec<T>, Vec<U>) {
    let p = crop_padding(shape, patch);
    let (img, s) = pad(img, shape, p);
    let (lab, _) = pad(lab, shape, p);
    let start = [
        crop_start(s[0], patch[0], rng),
        crop_start(s[1], patch[1], rng),
        crop_start(s[2], patch[2], rng),
    ];
    (crop(&img, s, start, patch), crop(&lab, s, start, patch))
}

/// One LA training sample: `[X, Y, Z]` case → rot/flip → crop to `patch`.
pub fn la_sample(
    img: &[f32],
    lab: &[u8],
    shape: [usize; 3],
    patch: [usize; 3],
    rng: &mut Pcg32,
) -> (Vec<f32>, Vec<u8>) {
    let (i, l, s) = random_rot_flip(img, lab, shape, rng);
    random_crop(&i, &l, s, patch, rng)
}

/// `scipy.ndimage.rotate(m, angle, order=0, reshape=False, mode='constant', cval=0)` of a 2-D
/// `[h, w]` array: output pixel `o` reads input `R (o - c) + c` (c = the centre `(size-1)/2`,
/// `R = [[cos, sin], [-sin, cos]]`) at `floor(coordinate + 0.5)`, and 0 where a coordinate
/// falls outside `[0, size - 1]`. The arithmetic follows scipy's order (matrix row times the
/// output index, then the offset), in f64. scipy takes cos/sin in degrees from cephes
/// (`cosdg`, `sindg`); ours are `cos`/`sin` of the angle in radians, which can differ in the
/// last bit and so flip a pixel whose coordinate lies exactly on a half.
pub fn rotate_nearest<T: Copy + Default>(m: &[T], shape: [usize; 2], angle_deg: f64) -> Vec<T> {
    let [h, w] = shape;
    let (s, c) = angle_deg.to_radians().sin_cos();
    // Multiples of 90 degrees exactly, as cephes.
    let (c, s) = match angle_deg.rem_euclid(360.0) {
        0.0 => (1.0, 0.0),
        90.0 => (0.0, 1.0),
        180.0 => (-1.0, 0.0),
        270.0 => (0.0, -1.0),
        _ => (c, s),
    };
    let ctr = [(h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0];
    let out_ctr = [c * ctr[0] + s * ctr[1], -s * ctr[0] + c * ctr[1]];
    let off = [ctr[0] - out_ctr[0], ctr[1] - out_ctr[1]];
    let mut out = vec![T::default(); h * w];
    for r in 0..h {
        for q in 0..w {
            let (rf, qf) = (r as f64, q as f64);
            let y = 0.0 + rf * c + qf * s + off[0];
            let x = 0.0 + rf * -s + qf * c + off[1];
            if y < 0.0 || y > h as f64 - 1.0 || x < 0.0 || x > w as f64 - 1.0 {
                continue;
            }
            let (yi, xi) = ((y + 0.5).floor() as usize, (x + 0.5).floor() as usize);
            out[r * w + q] = m[yi.min(h - 1) * w + xi.min(w - 1)];
        }
    }
    out
}

/// One ACDC training sample: `[H, W]` slice → `RandomGenerator` → `patch` (`[ph, pw]`).
/// Branches drawn as the reference: `u1 > 0.5` → rot/flip; else `u2 > 0.5` → rotation by
/// `randint(-20, 20)` degrees.
pub fn acdc_sample(
    img: &[f32],
    lab: &[u8],
    shape: [usize; 2],
    patch: [usize; 2],
    rng: &mut Pcg32,
) -> Result<(Vec<f32>, Vec<u8>)> {
    let s3 = [shape[0], shape[1], 1];
    let (img, lab, s) = if rng.random::<f64>() > 0.5 {
        let (i, l, s) = random_rot_flip(img, lab, s3, rng);
        (i, l, [s[0], s[1]])
    } else if rng.random::<f64>() > 0.5 {
        let angle = rng.random_range(-20i32..20) as f64;
        (
            rotate_nearest(img, shape, angle),
            rotate_nearest(lab, shape, angle),
            shape,
        )
    } else {
        (img.to_vec(), lab.to_vec(), shape)
    };
    Ok((
        zoom_nearest(&img, &s, &patch)?,
        zoom_nearest(&lab, &s, &patch)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rot90_matches_numpy_on_a_2x3() {
        // numpy: m = arange(6).reshape(2, 3); rot90(m, 1) = [[2, 5], [1, 4], [0, 3]]
        let m: Vec<u8> = (0..6).collect();
        assert_eq!(rot90(&m, [2, 3, 1], 1), (vec![2, 5, 1, 4, 0, 3], [3, 2, 1]));
        assert_eq!(rot90(&m, [2, 3, 1], 2).0, vec![5, 4, 3, 2, 1, 0]);
        assert_eq!(rot90(&m, [2, 3, 1], 3).0, vec![3, 0, 4, 1, 5, 2]);
        assert_eq!(flip(&m, [2, 3, 1], 1), vec![2, 1, 0, 5, 4, 3]);
        assert_eq!(flip(&m, [2, 3, 1], 0), vec![3, 4, 5, 0, 1, 2]);
    }

    #[test]
    fn rotate_by_zero_is_identity_and_by_ninety_matches_rot90() {
        let m: Vec<u16> = (0..25).collect();
        assert_eq!(rotate_nearest(&m, [5, 5], 0.0), m);
        // scipy rotate by +90 on a square = numpy rot90(m, 1).
        assert_eq!(rotate_nearest(&m, [5, 5], 90.0), rot90(&m, [5, 5, 1], 1).0);
    }
}
