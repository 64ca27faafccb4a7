//! Nearest-neighbour resizing with `scipy.ndimage.zoom(a, factors, order=0)` semantics, the
//! way SS-Net resizes ACDC slices to 256×256 and its predictions back.
//!
//! scipy ≥ 1.6 with the default `grid_mode=False` maps output index `o` of an axis to the input
//! coordinate `c = o · z` with `z = (in - 1) / (out - 1)` (both corner samples aligned; `z = 1`
//! when `out == 1`), computed in f64 exactly like that, and order-0 interpolation reads input
//! index `floor(c + 0.5)` (halves round up). Order 0 is separable: each axis has its own index
//! map, so N-d costs one lookup per output element. The golden fixtures
//! `eval/zoom_nearest_*` check this bit for bit.

use crate::error::{Error, Result};

/// Input index read by each output index along one axis (`out_len` entries).
pub fn index_map(in_len: usize, out_len: usize) -> Vec<usize> {
    if in_len == 0 {
        return Vec::new();
    }
    let zoom = if out_len > 1 {
        (in_len - 1) as f64 / (out_len - 1) as f64
    } else {
        1.0
    };
    (0..out_len)
        .map(|o| {
            let c = o as f64 * zoom;
            // The last output sample maps to in-1 up to the rounding of `zoom`; floor(c+0.5)
            // is in-1 there either way, the min only guards the index.
            ((c + 0.5).floor() as usize).min(in_len - 1)
        })
        .collect()
}

/// The output shape scipy's `zoom` derives from factors: `round(in · factor)` per axis,
/// Python's `round` (halves to even).
pub fn zoomed_shape(in_dims: &[usize], factors: &[f64]) -> Vec<usize> {
    in_dims
        .iter()
        .zip(factors)
        .map(|(&d, &f)| {
            let x = d as f64 * f;
            let r = x.round();
            // Rust's round() takes halves away from zero; Python's goes to the even neighbour.
            let r = if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
                r - x.signum()
            } else {
                r
            };
            r.max(0.0) as usize
        })
        .collect()
}

/// Resize a row-major array of `in_dims` to `out_dims` (same number of axes) by nearest
/// neighbour with scipy `zoom(order=0)` semantics. Works for any element type (f32 images,
/// u8 label maps).
pub fn zoom_nearest<T: Copy>(src: &[T], in_dims: &[usize], out_dims: &[usize]) -> Result<Vec<T>> {
    let n: usize = in_dims.iter().product();
    if in_dims.len() != out_dims.len() || in_dims.is_empty() || src.len() != n {
        return Err(Error::msg(format!(
            "zoom: {} elements of shape {in_dims:?} cannot be resized to {out_dims:?}",
            src.len()
        )));
    }
    if n == 0 {
        return Err(Error::msg(format!(
            "zoom: cannot resize an empty array of shape {in_dims:?}"
        )));
    }
    let nd = in_dims.len();
    let mut strides = vec![1usize; nd];
    for a in (0..nd - 1).rev() {
        strides[a] = strides[a + 1] * in_dims[a + 1];
    }
    // Per axis, the input offset (index · stride) of every output index.
    let maps: Vec<Vec<usize>> = (0..nd)
        .map(|a| {
            index_map(in_dims[a], out_dims[a])
                .into_iter()
                .map(|i| i * strides[a])
                .collect()
        })
        .collect();
    let total: usize = out_dims.iter().product();
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return Ok(out);
    }
    let last = &maps[nd - 1];
    let mut coord = vec![0usize; nd - 1];
    loop {
        let base: usize = (0..nd - 1).map(|a| maps[a][coord[a]]).sum();
        out.extend(last.iter().map(|&off| src[base + off]));
        // Odometer over all axes but the last.
        let mut a = nd - 1;
        loop {
            if a == 0 {
                return Ok(out);
            }
            a -= 1;
            coord[a] += 1;
            if coord[a] < out_dims[a] {
                break;
            }
            coord[a] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corners_align_and_halves_round_up() {
        // in 3 → out 5: z = 0.5, coords 0, .5, 1, 1.5, 2 → 0, 1, 1, 2, 2.
        assert_eq!(index_map(3, 5), vec![0, 1, 1, 2, 2]);
        assert_eq!(index_map(5, 3), vec![0, 2, 4]);
        assert_eq!(index_map(4, 1), vec![0]);
        assert_eq!(index_map(1, 3), vec![0, 0, 0]);
    }

    #[test]
    fn shape_rounding() {
        assert_eq!(
            zoomed_shape(&[13, 9], &[256.0 / 13.0, 256.0 / 9.0]),
            vec![256, 256]
        );
        assert_eq!(zoomed_shape(&[5, 3], &[0.5, 0.5]), vec![2, 2]); // 2.5 → 2, 1.5 → 2
    }

    #[test]
    fn nd_and_errors() {
        let a: Vec<u8> = (0..6).collect(); // [2, 3]
        let z = zoom_nearest(&a, &[2, 3], &[3, 5]).unwrap();
        assert_eq!(z, vec![0, 1, 1, 2, 2, 3, 4, 4, 5, 5, 3, 4, 4, 5, 5]);
        let z3 = zoom_nearest(&a, &[1, 2, 3], &[1, 3, 5]).unwrap();
        assert_eq!(z3, z);
        assert!(zoom_nearest(&a, &[2, 2], &[4, 4]).is_err());
        assert!(zoom_nearest(&a, &[2, 3], &[4]).is_err());
    }
}
