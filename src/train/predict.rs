//! A training run's predictions: the inference settings of its configuration, a whole case
//! predicted with them, and the PNG panel of a case.

use super::config::{DatasetKind, TrainConfig};
use super::snapshot;
use crate::data::dataset::Case;
use crate::error::Result;
use crate::infer::InferConfig;
use crate::nn::Model;
use std::path::Path;

/// The inference settings of a configuration: ACDC slice-wise at `patch`; LA sliding window
/// at `val_patch` with the validation strides, uniform average (SS-Net's).
pub fn infer_config(cfg: &TrainConfig) -> InferConfig {
    let mut ic = InferConfig::default();
    match cfg.dataset {
        DatasetKind::Acdc => ic.slices.size = [cfg.patch[0], cfg.patch[1]],
        DatasetKind::La => {
            let p = cfg.val_patch();
            ic.window.patch = [p[0], p[1], p[2]];
            ic.window.stride_xy = cfg.val_stride_xy;
            ic.window.stride_z = cfg.val_stride_z;
        }
    }
    ic
}

/// Predict a whole case ([`crate::infer::predict_volume`] with [`infer_config`]); no
/// connected-component step.
pub fn predict_case(model: &Model, cfg: &TrainConfig, case: &Case) -> Result<Vec<u8>> {
    Ok(
        crate::infer::predict_volume(model, &case.image, case.shape, &infer_config(cfg), false)?
            .labels,
    )
}

/// PNG of the middle slice of a case (ACDC: middle of `[S, H, W]`; LA: middle z of
/// `[X, Y, Z]`): image | label | prediction.
pub fn write_case_png(path: &Path, case: &Case, pred: &[u8], kind: DatasetKind) -> Result<()> {
    let (axis, k) = match kind {
        DatasetKind::Acdc => (0, case.shape[0] / 2),
        DatasetKind::La => (2, case.shape[2] / 2),
    };
    let (img, s) = snapshot::slice_of(&case.image, case.shape, axis, k);
    let (lab, _) = snapshot::slice_of(&case.label, case.shape, axis, k);
    let (prd, _) = snapshot::slice_of(pred, case.shape, axis, k);
    snapshot::write_panels(path, &img, &lab, &prd, s)
}
