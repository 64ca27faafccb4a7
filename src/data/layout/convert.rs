//! Conversion of SS-Net's datasets (LA HDF5, ACDC NIfTI) into the Decathlon or nnU-Net v2
//! layout (`tools/to_msd.rs`, and the tests' datasets).
//!
//! LA volumes (`[X, Y, Z]` h5 arrays) become NIfTI dims `[X, Y, Z]` with LA's 0.625 mm
//! isotropic voxels; ACDC volumes keep their files' header. An optional crop (a box of at most
//! `crop` voxels `[x, y, z]` centred on the label's foreground) keeps small test datasets small.

use super::dataset_json::JsonFlavour;
use crate::data::dataset::{AcdcDataset, LaDataset, LA_SPACING_MM};
use crate::data::nifti::{self, Volume};
use crate::error::{Error, Result};
use std::path::Path;

/// A case to write: an image and, when labelled, its label map (`[z][y][x]`).
#[derive(Clone, Debug)]
pub struct Converted {
    pub id: String,
    pub image: Volume,
    pub label: Option<Vec<u8>>,
}

/// Crop `v` (and `label`) to a box of at most `size` `[x, y, z]`, centred on the label's
/// foreground (the volume's centre without one).
pub fn crop_around_label(v: &Volume, label: &[u8], size: [usize; 3]) -> (Volume, Vec<u8>) {
    let [nx, ny, _] = v.dims;
    let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
    for (i, &l) in label.iter().enumerate() {
        if l != 0 {
            let p = [i % nx, (i / nx) % ny, i / (nx * ny)];
            for a in 0..3 {
                lo[a] = lo[a].min(p[a]);
                hi[a] = hi[a].max(p[a]);
            }
        }
    }
    let start: [usize; 3] = [0, 1, 2].map(|a| {
        let s = size[a].min(v.dims[a]);
        let c = if lo[a] == usize::MAX {
            v.dims[a] / 2
        } else {
            (lo[a] + hi[a]) / 2
        };
        c.saturating_sub(s / 2).min(v.dims[a] - s)
    });
    let d: [usize; 3] = [0, 1, 2].map(|a| size[a].min(v.dims[a]));
    let mut data = Vec::with_capacity(d.iter().product());
    let mut lab = Vec::with_capacity(data.capacity());
    for z in start[2]..start[2] + d[2] {
        for y in start[1]..start[1] + d[1] {
            let row = (z * ny + y) * nx;
            data.extend_from_slice(&v.data[row + start[0]..row + start[0] + d[0]]);
            lab.extend_from_slice(&label[row + start[0]..row + start[0] + d[0]]);
        }
    }
    // The box's first voxel keeps its world position: shift the affine's offset.
    let mut header = v.header.clone();
    header.dim[1] = d[0] as u16;
    header.dim[2] = d[1] as u16;
    header.dim[3] = d[2] as u16;
    let shift =
        v.affine * nalgebra::Vector4::new(start[0] as f64, start[1] as f64, start[2] as f64, 1.0);
    header.srow_x[3] = shift[0] as f32;
    header.srow_y[3] = shift[1] as f32;
    header.srow_z[3] = shift[2] as f32;
    header.quatern_x = shift[0] as f32;
    header.quatern_y = shift[1] as f32;
    header.quatern_z = shift[2] as f32;
    let out = Volume {
        data,
        dims: d,
        spacing: v.spacing,
        affine: nifti::affine_of(&header),
        header,
        datatype: v.datatype,
        path: v.path.clone(),
    };
    (out, lab)
}

/// The LA cases `ids` of an SS-Net LA folder as NIfTI volumes (0.625 mm), cropped when asked.
pub fn la_cases(root: &Path, ids: &[String], crop: Option<[usize; 3]>) -> Result<Vec<Converted>> {
    let ds = LaDataset::open(root)?;
    ids.iter()
        .map(|id| {
            let c = ds.load(id)?;
            let data = nifti::xyz_to_zyx(&c.image, c.shape);
            let label = nifti::xyz_to_zyx(&c.label, c.shape);
            let v = Volume::new(data, c.shape, [LA_SPACING_MM; 3])?;
            let (image, label) = match crop {
                Some(s) => crop_around_label(&v, &label, s),
                None => (v, label),
            };
            Ok(Converted {
                id: id.clone(),
                image,
                label: Some(label),
            })
        })
        .collect()
}

/// The ACDC cases `ids` of the NIfTI ACDC folder, cropped when asked.
pub fn acdc_cases(root: &Path, ids: &[String], crop: Option<[usize; 3]>) -> Result<Vec<Converted>> {
    let ds = AcdcDataset::open(root)?;
    ids.iter()
        .map(|id| {
            let (img, lab) = ds.paths(id)?;
            let v = nifti::read(&img)?;
            let label = nifti::read(&lab)?.labels()?;
            let (image, label) = match crop {
                Some(s) => crop_around_label(&v, &label, s),
                None => (v, label),
            };
            Ok(Converted {
                id: id.clone(),
                image,
                label: Some(label),
            })
        })
        .collect()
}

/// Write `cases` as a dataset in `out` (Decathlon or nnU-Net v2 layout): labelled cases with
/// their label, unlabelled ones as images only (in `imagesTr/`, listed nowhere), `test` in
/// `imagesTs/`; `dataset.json` with `modality` / `channel_names` and `labels`.
pub fn write_dataset(
    out: &Path,
    flavour: JsonFlavour,
    modality: &str,
    labels: &[(u8, &str)],
    cases: &[Converted],
    test: &[Converted],
) -> Result<()> {
    for d in ["imagesTr", "labelsTr", "imagesTs"] {
        let p = out.join(d);
        std::fs::create_dir_all(&p)
            .map_err(|e| Error::file(&p, format!("cannot create folder: {e}")))?;
    }
    let suffix = if flavour == JsonFlavour::NnUnetV2 {
        "_0000"
    } else {
        ""
    };
    let mut training = Vec::new();
    for c in cases {
        let img = format!("imagesTr/{}{suffix}.nii.gz", c.id);
        nifti::write_volume(out.join(&img), &c.image.data, &c.image)?;
        if let Some(l) = &c.label {
            let lab = format!("labelsTr/{}.nii.gz", c.id);
            nifti::write_labels(out.join(&lab), l, &c.image)?;
            training.push(serde_json::json!({
                "image": format!("./imagesTr/{}.nii.gz", c.id),
                "label": format!("./{lab}"),
            }));
        }
    }
    for c in test {
        let img = format!("imagesTs/{}{suffix}.nii.gz", c.id);
        nifti::write_volume(out.join(&img), &c.image.data, &c.image)?;
    }
    let json = match flavour {
        JsonFlavour::Msd => serde_json::json!({
            "name": "converted by ssnet",
            "modality": { "0": modality },
            "labels": labels.iter().map(|(v, n)| (v.to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
            "numTraining": training.len(),
            "numTest": test.len(),
            "training": training,
            "test": test.iter().map(|c| format!("./imagesTs/{}.nii.gz", c.id)).collect::<Vec<_>>(),
        }),
        JsonFlavour::NnUnetV2 => serde_json::json!({
            "name": "converted by ssnet",
            "channel_names": { "0": modality },
            "labels": labels.iter().map(|(v, n)| (n.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "numTraining": cases.len(),
            "file_ending": ".nii.gz",
        }),
    };
    let p = out.join("dataset.json");
    let text = serde_json::to_string_pretty(&json).map_err(|e| Error::file(&p, e))?;
    std::fs::write(&p, text + "\n").map_err(|e| Error::file(&p, format!("cannot write: {e}")))
}
