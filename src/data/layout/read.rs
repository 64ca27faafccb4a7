//! Reading one case of an own dataset with every check of the image / label pair, each a
//! one-line error naming the file and the fix: a 4-D image, non-finite voxels, a label map of
//! other dims or another affine (beyond 1e-3 mm), label values that `dataset.json` does not
//! list. An empty label map is a warning (the case still trains).

use super::CaseFiles;
use crate::data::nifti::{self, Volume};
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// Largest difference allowed between the image's and the label's affine (mm).
pub const AFFINE_TOLERANCE_MM: f64 = 1e-3;

/// An image and, when the case has one, its label map (`[z][y][x]`, the image's grid).
pub struct CasePair {
    pub image: Volume,
    pub label: Option<Vec<u8>>,
    /// Warnings to print (an empty label map).
    pub warnings: Vec<String>,
}

/// Read and check a case. `labels`: the class values `dataset.json` lists (`None`: any value
/// in 0..=255).
pub fn read_case(c: &CaseFiles, labels: Option<&BTreeMap<u8, String>>) -> Result<CasePair> {
    let image = c.read_image()?;
    let bad = image.data.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(Error::file(
            &image.path,
            format!("{bad} NaN or infinite voxels: fix or drop this scan"),
        ));
    }
    let mut warnings = Vec::new();
    let label = match &c.label {
        None => None,
        Some(lp) => {
            let lv = nifti::read(lp)?;
            if lv.dims != image.dims {
                return Err(Error::file(
                    lp,
                    format!(
                        "label dims {:?} differ from the image's {:?} ({}): the label map must be on the image's grid",
                        lv.dims,
                        image.dims,
                        image.path.display()
                    ),
                ));
            }
            let diff = (lv.affine - image.affine).abs().max();
            if diff > AFFINE_TOLERANCE_MM {
                return Err(Error::file(
                    lp,
                    format!(
                        "label affine differs from the image's ({}) by {diff:.4} mm (more than {AFFINE_TOLERANCE_MM}): re-save the label with the image's header",
                        image.path.display()
                    ),
                ));
            }
            let l = lv.labels()?;
            if let Some(allowed) = labels {
                let mut seen = [false; 256];
                for &v in &l {
                    seen[v as usize] = true;
                }
                if let Some(v) = (0..256).find(|&v| seen[v] && !allowed.contains_key(&(v as u8))) {
                    let listed: Vec<String> = allowed.keys().map(|k| k.to_string()).collect();
                    return Err(Error::file(
                        lp,
                        format!(
                            "label value {v} is not in dataset.json's labels ({}): add it there or fix the label map",
                            listed.join(", ")
                        ),
                    ));
                }
            }
            if l.iter().all(|&v| v == 0) {
                warnings.push(format!(
                    "warning: {}: empty label map (background only); the case still trains",
                    lp.display()
                ));
            }
            Some(l)
        }
    };
    Ok(CasePair {
        image,
        label,
        warnings,
    })
}
