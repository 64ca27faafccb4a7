//! Resampling a `[z][y][x]` volume to another voxel size: images linearly, label maps by
//! nearest neighbour, through `ndarray-ndimage`'s `zoom` (scipy.ndimage's, corners aligned).

use crate::error::{Error, Result};
use ndarray::Array3;
use ndarray_ndimage::{zoom, BorderMode};

/// The shape of a volume of `shape` and voxel size `spacing` resampled to `target` (all in
/// the same axis order): `round(shape · spacing / target)`, at least 1.
pub fn resampled_shape(shape: [usize; 3], spacing: [f64; 3], target: [f64; 3]) -> [usize; 3] {
    [0, 1, 2].map(|a| ((shape[a] as f64 * spacing[a] / target[a]).round() as usize).max(1))
}

/// `zoom` to exactly `to`. Axes of length 1 are doubled first (the zoom maps corner to
/// corner, which needs two samples); an axis cannot shrink to 1 sample from more.
fn zoom_to(data: Array3<f32>, to: [usize; 3], order: usize) -> Result<Array3<f32>> {
    let from = data.dim();
    let from = [from.0, from.1, from.2];
    if from == to {
        return Ok(data);
    }
    if let Some(a) = (0..3).find(|&a| to[a] == 1 && from[a] > 1) {
        return Err(Error::msg(format!(
            "resample: axis {a} of {from:?} would shrink to a single voxel (target {to:?}): choose a smaller target spacing"
        )));
    }
    let mut data = data;
    for (a, &len) in from.iter().enumerate() {
        if len == 1 {
            data = ndarray::concatenate(ndarray::Axis(a), &[data.view(), data.view()])
                .map_err(|e| Error::msg(format!("resample: {e}")))?;
        }
    }
    let d = data.dim();
    let d = [d.0, d.1, d.2];
    let (mut src, mut dst) = (d, to);
    for a in 0..3 {
        if d[a] == 2 && from[a] == 1 && to[a] == 1 {
            // Kept as 2 and cut back to 1 below.
            src[a] = 2;
            dst[a] = 2;
        }
    }
    let factors = [0, 1, 2].map(|a| dst[a] as f64 / src[a] as f64);
    let out = zoom(&data, factors, order, BorderMode::Nearest, false);
    let got = out.dim();
    if [got.0, got.1, got.2] != dst {
        return Err(Error::msg(format!(
            "resample: zoom gave {got:?} instead of {dst:?}"
        )));
    }
    Ok(out.slice(ndarray::s![..to[0], ..to[1], ..to[2]]).to_owned())
}

fn array(data: Vec<f32>, shape: [usize; 3]) -> Result<Array3<f32>> {
    Array3::from_shape_vec((shape[0], shape[1], shape[2]), data)
        .map_err(|e| Error::msg(format!("resample: {e}")))
}

/// Linear resampling of an image of `shape` to `to`.
pub fn resample_image(data: Vec<f32>, shape: [usize; 3], to: [usize; 3]) -> Result<Vec<f32>> {
    Ok(zoom_to(array(data, shape)?, to, 1)?.into_iter().collect())
}

/// Nearest-neighbour resampling of a label map of `shape` to `to`.
pub fn resample_labels(data: &[u8], shape: [usize; 3], to: [usize; 3]) -> Result<Vec<u8>> {
    if shape == to {
        return Ok(data.to_vec());
    }
    let f = array(data.iter().map(|&l| l as f32).collect(), shape)?;
    Ok(zoom_to(f, to, 0)?
        .into_iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_values() {
        assert_eq!(
            resampled_shape([10, 20, 30], [2.0, 1.0, 1.0], [1.0, 1.0, 1.5]),
            [20, 20, 20]
        );
        // A linear ramp stays a ramp; corners are kept.
        let ramp: Vec<f32> = (0..5).map(|i| i as f32).collect();
        let up = resample_image(ramp, [1, 1, 5], [1, 1, 9]).unwrap();
        assert_eq!(up.len(), 9);
        for (i, v) in up.iter().enumerate() {
            assert!((v - i as f32 * 0.5).abs() < 1e-5, "{up:?}");
        }
        let lab = resample_labels(&[0, 1, 2, 3], [1, 2, 2], [1, 4, 4]).unwrap();
        assert_eq!(lab.len(), 16);
        assert_eq!((lab[0], lab[3], lab[12], lab[15]), (0, 1, 2, 3));
        assert!(lab.iter().all(|&l| l <= 3));
        // Back to the original shape exactly.
        assert_eq!(
            resample_labels(&lab, [1, 4, 4], [1, 2, 2]).unwrap(),
            vec![0, 1, 2, 3]
        );
    }
}
