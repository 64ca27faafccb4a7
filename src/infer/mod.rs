//! Inference: sliding window (3D) and slice-wise (2D) prediction.
//!
//! - [`window`]: SS-Net's `test_single_case` (LA, VNet): zero padding to the patch, patches
//!   at `min(stride·i, size − patch)`, softmax averaged over overlapping patches (or weighted
//!   by a Gaussian importance map), padding cropped back, foreground = p1 > 0.5. The
//!   patches are cut, accumulated and normalised on the GPU (`shaders/infer.wgsl`); only
//!   the final probabilities and labels are read back.
//! - [`slices`]: SS-Net's `test_single_volume` (ACDC, UNet): each slice of `[S, H, W]`
//!   zoomed to 256×256 (scipy `zoom(order=0)`), argmax of the softmax, zoomed back.
//!
//! Both run the network in eval mode ([`Pass::EVAL`]: BatchNorm running statistics, no
//! dropout) without recording a tape, several patches or slices per forward.
//! [`predict_volume`] picks the pipeline from the model's architecture.

pub mod budget;
pub mod slices;
pub mod window;

pub use slices::{predict_slices, predict_slices_with, SliceWise};
pub use window::{
    gaussian_importance, sliding_window, sliding_window_with, window_starts, Plan, SlidingWindow,
    Weighting,
};

use crate::error::Result;
use crate::nn::{Arch, Model, Pass};
use crate::ops;
use crate::tensor::Tensor;

/// A segmentation of one volume.
#[derive(Clone, Debug)]
pub struct Prediction {
    /// Row-major shape of the input and of `labels`: `[X, Y, Z]` for the 3D pipeline,
    /// `[S, H, W]` for the 2D one.
    pub shape: [usize; 3],
    pub num_classes: usize,
    /// Class per voxel, row-major over `shape`.
    pub labels: Vec<u8>,
    /// Class probabilities `[C, shape...]` (3D: the averaged softmax; 2D: the softmax of each
    /// slice zoomed back, only when asked for), else empty.
    pub probs: Vec<f32>,
}

impl Prediction {
    /// Probabilities of class `c` (row-major over `shape`), when kept.
    pub fn class_probs(&self, c: usize) -> Option<&[f32]> {
        let n: usize = self.shape.iter().product();
        (c < self.num_classes && self.probs.len() == self.num_classes * n)
            .then(|| &self.probs[c * n..(c + 1) * n])
    }
}

/// Inference settings of both pipelines.
#[derive(Clone, Debug, Default)]
pub struct InferConfig {
    pub window: SlidingWindow,
    pub slices: SliceWise,
}

/// Softmax of the eval-mode logits of a batch, without recording a tape.
pub fn eval_probs(model: &Model, x: &Tensor) -> Result<Tensor> {
    crate::autograd::no_grad(|| {
        let (logits, _) = model.forward(x, Pass::EVAL)?;
        ops::softmax(&logits)
    })
}

/// Predict a volume with the pipeline of the model's architecture: VNet → the sliding window
/// on `[X, Y, Z]`, UNet → slice-wise on `[S, H, W]` (`probs` only when `want_probs`).
pub fn predict_volume(
    model: &Model,
    image: &[f32],
    shape: [usize; 3],
    cfg: &InferConfig,
    want_probs: bool,
) -> Result<Prediction> {
    match model.cfg.arch {
        Arch::VNet => sliding_window(model, image, shape, &cfg.window),
        Arch::UNet => predict_slices(model, image, shape, &cfg.slices, want_probs),
    }
}
