//! Preprocessing of a user's scans before training and prediction, and its exact inverse for
//! predictions.
//!
//! For each scan, in this order: [`orient`] to the closest canonical orientation (so scans
//! stored with other axis orders or flipped axes share one grid), [`crop`] to the non-zero
//! region of the image, normalise the [`intensity`], [`resample`] to the target voxel size
//! (image linear, label nearest). [`Geometry`] records what was done, and
//! [`restore_labels`] maps a prediction on the preprocessed grid back onto the scan's own
//! voxels (resampled back, uncropped, reoriented), to be written with the scan's own header.
//! [`cache`] keeps the preprocessed cases of a run on disk, keyed by a fingerprint.

pub mod cache;
pub mod crop;
pub mod intensity;
pub mod orient;
pub mod resample;

use crate::data::nifti::Volume;
use crate::error::{Error, Result};
pub use crop::BBox;
pub use intensity::Intensity;
pub use orient::Orientation;
use serde::{Deserialize, Serialize};

/// What is done to every scan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    pub intensity: Intensity,
    /// Target voxel size in mm along canonical x, y, z; `None` keeps every scan's grid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_spacing: Option<[f64; 3]>,
    /// Crop to the non-zero region of the image.
    pub crop_nonzero: bool,
}

/// Where the preprocessed grid of a scan sits in the scan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    /// The scan's NIfTI dims `[nx, ny, nz]`.
    pub dims: [usize; 3],
    pub orientation: Orientation,
    /// The crop box on the canonical `[z][y][x]` grid.
    pub bbox: BBox,
    /// The preprocessed shape `[z, y, x]`.
    pub shape: [usize; 3],
}

/// A preprocessed scan: canonical `[z][y][x]` arrays.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub image: Vec<f32>,
    pub label: Option<Vec<u8>>,
    /// Voxel size `[z, y, x]` (mm) of the arrays.
    pub spacing: [f64; 3],
    pub geometry: Geometry,
}

/// The canonical voxel size `[x, y, z]` of a volume (from its affine).
pub fn canonical_spacing(v: &Volume) -> [f64; 3] {
    let o = Orientation::of_affine(&v.affine);
    o.apply3(Orientation::voxel_sizes(&v.affine))
}

/// The canonical dims `[x, y, z]` of a volume.
pub fn canonical_dims(v: &Volume) -> [usize; 3] {
    Orientation::of_affine(&v.affine).apply3(v.dims)
}

fn zyx<T: Copy>(v: [T; 3]) -> [T; 3] {
    [v[2], v[1], v[0]]
}

/// Preprocess a scan and, when given, its label map (`[z][y][x]`, the scan's grid).
pub fn prepare(image: &Volume, label: Option<&[u8]>, p: &Preprocessing) -> Result<Prepared> {
    let o = Orientation::of_affine(&image.affine);
    let sizes = o.apply3(Orientation::voxel_sizes(&image.affine));
    if sizes.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
        return Err(Error::file(
            &image.path,
            format!("voxel size {sizes:?} from the affine is not positive: fix the header's pixdim / sform"),
        ));
    }
    let (img, cd) = o.reorient(&image.data, image.dims);
    let shape = zyx(cd);
    let bbox = if p.crop_nonzero {
        BBox::nonzero(&img, shape)
    } else {
        BBox::full(shape)
    };
    let mut img = bbox.crop(&img, shape);
    let lab = label.map(|l| bbox.crop(&o.reorient(l, image.dims).0, shape));
    let cropped = bbox.shape();
    p.intensity.apply(&mut img);
    let spacing = zyx(sizes);
    let (out, spacing) = match p.target_spacing {
        Some(t) => {
            let t = zyx(t);
            (resample::resampled_shape(cropped, spacing, t), t)
        }
        None => (cropped, spacing),
    };
    let at = |e: Error| match e {
        e @ Error::File { .. } => e,
        e => Error::file(&image.path, e),
    };
    let img = resample::resample_image(img, cropped, out).map_err(at)?;
    let lab = lab
        .map(|l| resample::resample_labels(&l, cropped, out))
        .transpose()
        .map_err(at)?;
    Ok(Prepared {
        image: img,
        label: lab,
        spacing,
        geometry: Geometry {
            dims: image.dims,
            orientation: o,
            bbox,
            shape: out,
        },
    })
}

/// A label map on the preprocessed grid (`[z][y][x]` of `g.shape`) back on the scan's own
/// voxels (`[z][y][x]` of `g.dims`): resampled back (nearest), uncropped (background
/// outside the box), reoriented.
pub fn restore_labels(pred: &[u8], g: &Geometry) -> Result<Vec<u8>> {
    let n: usize = g.shape.iter().product();
    if pred.len() != n {
        return Err(Error::msg(format!(
            "restore: {} labels for the preprocessed shape {:?}",
            pred.len(),
            g.shape
        )));
    }
    let back = resample::resample_labels(pred, g.shape, g.bbox.shape())?;
    let canonical = zyx(g.orientation.apply3(g.dims));
    let full = g.bbox.uncrop(&back, canonical);
    Ok(g.orientation.restore(&full, g.dims))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_then_restore_gives_the_scan_grid() {
        // A 6x5x3 scan with a flipped x axis and 2 mm voxels along z, resampled to 1 mm.
        let dims = [6, 5, 3];
        let n = 90;
        let data: Vec<f32> = (0..n)
            .map(|i| if i % 7 == 0 { 0.0 } else { i as f32 })
            .collect();
        let mut v = Volume::new(data, dims, [1.0, 1.0, 2.0]).unwrap();
        v.affine[(0, 0)] = -1.0;
        let label: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        let p = Preprocessing {
            intensity: Intensity::ZScore,
            target_spacing: Some([1.0, 1.0, 1.0]),
            crop_nonzero: true,
        };
        let pr = prepare(&v, Some(&label), &p).unwrap();
        assert_eq!(pr.geometry.shape, [6, 5, 6]);
        assert_eq!(pr.image.len(), 180);
        assert_eq!(pr.spacing, [1.0, 1.0, 1.0]);
        let back = restore_labels(pr.label.as_ref().unwrap(), &pr.geometry).unwrap();
        assert_eq!(back, label);
    }
}
