//! 3D sliding-window inference, exactly as SS-Net's `test_single_case`
//! (`code/utils/test_3d_patch.py`), on the GPU.
//!
//! For a volume `[X, Y, Z]` and a patch `[px, py, pz]`:
//! 1. an axis shorter than the patch is zero-padded to the patch, `pad // 2` before and the
//!    rest after;
//! 2. along each (padded) axis of size `s`, patches start at `min(stride·i, s − p)` for
//!    `i < ceil((s − p) / stride) + 1` (`stride_xy` along x and y, `stride_z` along z), every
//!    combination visited in x, y, z order;
//! 3. each patch goes through the network (eval mode); its softmax is added to a score map
//!    and 1 to a count map over the patch's voxels (with [`Weighting::Gaussian`], both are
//!    multiplied by an nnU-Net importance map instead);
//! 4. score / count is cropped back to `[X, Y, Z]`; with two classes the label is
//!    `p1 > 0.5` (SS-Net's rule), with more the first class of highest probability.
//!
//! The reference stores the averaged foreground probability in every channel of its
//! `score_map` (it broadcasts `y[0, 1]`); [`Prediction::probs`] holds each class's own
//! averaged probability instead, so its channel 1 is the reference's `score_map[c]`.
//!
//! Steps 1 to 4 run on the GPU (`shaders/infer.wgsl`): the image is uploaded once, the
//! patches of a batch are cut from it on the GPU, the probabilities are accumulated in place
//! in dispatch order (deterministic, no atomics), and only the final probabilities and labels
//! are read back.

use super::{eval_probs, Prediction};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Shader};
use crate::nn::{Arch, Model};
use crate::ops::{launch, u32_of};
use crate::tensor::{DType, Tensor};
use std::sync::Arc;

/// How overlapping patches are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Weighting {
    /// Plain average of the patches' softmax (SS-Net).
    #[default]
    Uniform,
    /// Weighted by a Gaussian importance map centred on the patch, sigma = patch / 8 per axis
    /// (nnU-Net's): voxels near a patch border count less.
    Gaussian,
}

/// Sliding-window settings. The default is SS-Net's LA evaluation: patch 112×112×80,
/// stride 18 (x, y) and 4 (z), uniform average.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlidingWindow {
    pub patch: [usize; 3],
    pub stride_xy: usize,
    pub stride_z: usize,
    pub weighting: Weighting,
    /// Patches per forward pass; 0 = automatic (up to 4, within the adapter's binding size).
    pub batch: usize,
}

impl Default for SlidingWindow {
    fn default() -> Self {
        SlidingWindow {
            patch: [112, 112, 80],
            stride_xy: 18,
            stride_z: 4,
            weighting: Weighting::Uniform,
            batch: 0,
        }
    }
}

/// Patch start positions along one axis of (padded) size `size >= patch`:
/// `min(stride·i, size − patch)` for `i < ceil((size − patch) / stride) + 1`.
pub fn window_starts(size: usize, patch: usize, stride: usize) -> Vec<usize> {
    assert!(
        size >= patch && stride > 0,
        "window_starts: size {size} < patch {patch} or stride 0"
    );
    let n = (size - patch).div_ceil(stride) + 1;
    (0..n).map(|i| (stride * i).min(size - patch)).collect()
}

/// Where the patches of one volume go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The volume's shape `[X, Y, Z]`.
    pub shape: [usize; 3],
    /// Zeros added before each axis (`pad // 2`); the rest of `padded - shape` goes after.
    pub pad_before: [usize; 3],
    /// The padded shape: `max(shape, patch)` per axis.
    pub padded: [usize; 3],
    /// Start positions per axis, in padded coordinates.
    pub starts: [Vec<usize>; 3],
}

impl Plan {
    pub fn num_patches(&self) -> usize {
        self.starts.iter().map(Vec::len).product()
    }

    /// Every patch start `[xs, ys, zs]` in the reference's loop order (x outermost).
    pub fn patches(&self) -> Vec<[usize; 3]> {
        let mut v = Vec::with_capacity(self.num_patches());
        for &x in &self.starts[0] {
            for &y in &self.starts[1] {
                for &z in &self.starts[2] {
                    v.push([x, y, z]);
                }
            }
        }
        v
    }
}

impl SlidingWindow {
    /// Check the settings (positive patch, strides from 1 to the patch size).
    pub fn validate(&self) -> Result<()> {
        if self.patch.contains(&0) {
            return Err(Error::config(format!(
                "sliding window: patch {:?} has a zero side",
                self.patch
            )));
        }
        if self.stride_xy == 0 || self.stride_z == 0 {
            return Err(Error::config(format!(
                "sliding window: strides must be positive (xy {}, z {})",
                self.stride_xy, self.stride_z
            )));
        }
        // A stride longer than the patch would leave voxels that no patch covers.
        if self.stride_xy > self.patch[0].min(self.patch[1]) || self.stride_z > self.patch[2] {
            return Err(Error::config(format!(
                "sliding window: strides {}/{} (xy/z) longer than the patch {:?} would leave voxels uncovered",
                self.stride_xy, self.stride_z, self.patch
            )));
        }
        Ok(())
    }

    /// Padding and patch positions for a volume of `shape` `[X, Y, Z]`.
    pub fn plan(&self, shape: [usize; 3]) -> Result<Plan> {
        self.validate()?;
        if shape.contains(&0) {
            return Err(Error::op(
                "sliding_window",
                format!("empty volume of shape {shape:?}"),
            ));
        }
        let mut pad_before = [0; 3];
        let mut padded = [0; 3];
        let mut starts: [Vec<usize>; 3] = Default::default();
        let strides = [self.stride_xy, self.stride_xy, self.stride_z];
        for a in 0..3 {
            let pad = self.patch[a].saturating_sub(shape[a]);
            pad_before[a] = pad / 2;
            padded[a] = shape[a] + pad;
            starts[a] = window_starts(padded[a], self.patch[a], strides[a]);
        }
        Ok(Plan {
            shape,
            pad_before,
            padded,
            starts,
        })
    }

    /// Patches per forward: `batch`, or automatic: as many as keep a 16-channel activation
    /// of the batch within half the adapter's storage binding, at most 4.
    pub fn batch_for(&self, gpu: &Gpu) -> usize {
        if self.batch > 0 {
            return self.batch;
        }
        let per = 16 * 4 * self.patch.iter().product::<usize>() as u64 * 2;
        (gpu.max_binding() / per.max(1)).clamp(1, 4) as usize
    }
}

/// nnU-Net's Gaussian importance map of a patch (row-major `[px, py, pz]`): a unit impulse at
/// `patch // 2` smoothed by scipy's `gaussian_filter` (sigma = patch / 8, truncate 4, constant
/// mode), divided by its maximum, zeros replaced by the smallest non-zero value.
pub fn gaussian_importance(patch: [usize; 3]) -> Vec<f32> {
    let axis = |len: usize| -> Vec<f64> {
        let c = len / 2;
        let sigma = len as f64 / 8.0;
        let radius = (4.0 * sigma + 0.5) as usize;
        (0..len)
            .map(|i| {
                let d = i.abs_diff(c);
                if d > radius {
                    0.0
                } else {
                    (-0.5 * (d * d) as f64 / (sigma * sigma)).exp()
                }
            })
            .collect()
    };
    let (gx, gy, gz) = (axis(patch[0]), axis(patch[1]), axis(patch[2]));
    let mut w = Vec::with_capacity(patch.iter().product());
    for &a in &gx {
        for &b in &gy {
            for &c in &gz {
                w.push((a * b * c) as f32);
            }
        }
    }
    let min_nz = w
        .iter()
        .copied()
        .filter(|&v| v > 0.0)
        .fold(f32::INFINITY, f32::min);
    if min_nz.is_finite() {
        for v in &mut w {
            if *v == 0.0 {
                *v = min_nz;
            }
        }
    }
    w
}

/// Mirrors `InferParams` in infer.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct InferParams {
    vol: [u32; 4],
    patch: [u32; 4],
    start: [u32; 4],
    pad: [u32; 4],
    orig: [u32; 4],
}

fn u3(op: &str, v: [usize; 3], w: usize) -> Result<[u32; 4]> {
    Ok([
        u32_of(op, v[0])?,
        u32_of(op, v[1])?,
        u32_of(op, v[2])?,
        u32_of(op, w)?,
    ])
}

/// The sliding window with a given patch predictor: `probs_of` maps a batch of patches
/// `[B, 1, px, py, pz]` to class probabilities `[B, num_classes, px, py, pz]` on the GPU.
/// `image` is row-major `[X, Y, Z]` (`shape`).
pub fn sliding_window_with(
    gpu: &Arc<Gpu>,
    image: &[f32],
    shape: [usize; 3],
    cfg: &SlidingWindow,
    num_classes: usize,
    probs_of: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Prediction> {
    let op = "sliding_window";
    let n: usize = shape.iter().product();
    if image.len() != n {
        return Err(Error::op(
            op,
            format!("{} voxels for shape {shape:?}", image.len()),
        ));
    }
    if !(1..=255).contains(&num_classes) {
        return Err(Error::op(
            op,
            format!("{num_classes} classes (1 to 255 supported)"),
        ));
    }
    let plan = cfg.plan(shape)?;
    let [px, py, pz] = cfg.patch;
    let pv = px * py * pz;
    let nvox: usize = plan.padded.iter().product();
    // Every flat index the kernels compute must fit u32.
    u32_of(op, num_classes * nvox)?;
    let batch = cfg.batch_for(gpu);
    u32_of(op, batch * num_classes * pv)?;

    let img = Tensor::from_f32(gpu, image, &[n])?;
    let weights = match cfg.weighting {
        Weighting::Uniform => vec![1.0; pv],
        Weighting::Gaussian => gaussian_importance(cfg.patch),
    };
    let w = Tensor::from_f32(gpu, &weights, &[pv])?;
    let score = Tensor::zeros(gpu, &[num_classes, nvox])?;
    let cnt = Tensor::zeros(gpu, &[nvox])?;
    let params = |start: [usize; 3], slot: usize| -> Result<InferParams> {
        Ok(InferParams {
            vol: u3(op, plan.padded, num_classes)?,
            patch: u3(op, cfg.patch, slot)?,
            start: u3(op, start, pv)?,
            pad: u3(op, plan.pad_before, 0)?,
            orig: u3(op, shape, 0)?,
        })
    };
    for (k, chunk) in plan.patches().chunks(batch).enumerate() {
        let b = chunk.len();
        let x = Tensor::empty(gpu, &[b, 1, px, py, pz], DType::F32, op)?;
        for (slot, &start) in chunk.iter().enumerate() {
            launch(
                gpu,
                Shader::Infer,
                "gather_patch",
                &params(start, slot)?,
                &[img.buffer(), x.buffer()],
                pv,
            )?;
        }
        let probs = probs_of(&x)?;
        if probs.shape() != [b, num_classes, px, py, pz] || probs.dtype() != DType::F32 {
            return Err(Error::op(op, format!("the predictor returned {probs:?} for {b} patches of {:?} and {num_classes} classes", cfg.patch)));
        }
        for (slot, &start) in chunk.iter().enumerate() {
            let bufs = [probs.buffer(), w.buffer(), score.buffer(), cnt.buffer()];
            launch(
                gpu,
                Shader::Infer,
                "accumulate",
                &params(start, slot)?,
                &bufs,
                pv,
            )?;
        }
        // Let the GPU start; every few batches wait, so that the queue stays short.
        gpu.flush()?;
        if k % 4 == 3 {
            gpu.wait()?;
        }
    }
    let probs = Tensor::empty(gpu, &[num_classes, n], DType::F32, op)?;
    let labels = Tensor::empty(gpu, &[n], DType::U32, op)?;
    let bufs = [
        score.buffer(),
        cnt.buffer(),
        probs.buffer(),
        labels.buffer(),
    ];
    launch(
        gpu,
        Shader::Infer,
        "finalize",
        &params([0; 3], 0)?,
        &bufs,
        n,
    )?;
    let labels = labels.to_u32()?.into_iter().map(|l| l as u8).collect();
    let probs = probs.to_f32()?;
    // NaN probabilities argmax to background: never pass them off as an empty segmentation.
    if let Some(i) = probs.iter().position(|v| !v.is_finite()) {
        return Err(Error::op(
            op,
            format!("non-finite probability at flat index {i} (the checkpoint or the input is broken): stopping"),
        ));
    }
    Ok(Prediction {
        shape,
        num_classes,
        labels,
        probs,
    })
}

/// SS-Net's sliding window with a 3D model (VNet, one input channel) on `image`, row-major
/// `[X, Y, Z]` (`shape`), as SS-Net's LA arrays.
pub fn sliding_window(
    model: &Model,
    image: &[f32],
    shape: [usize; 3],
    cfg: &SlidingWindow,
) -> Result<Prediction> {
    if model.cfg.arch != Arch::VNet || model.cfg.in_channels != 1 {
        return Err(Error::config(format!(
            "the sliding window needs a 3D model with one input channel, got a {} with {} channels",
            model.cfg.arch.name(),
            model.cfg.in_channels
        )));
    }
    if cfg.patch.iter().any(|&p| p % 16 != 0 || p == 0) {
        return Err(Error::config(format!(
            "patch {:?}: the VNet needs every side a multiple of 16",
            cfg.patch
        )));
    }
    sliding_window_with(
        &model.gpu,
        image,
        shape,
        cfg,
        model.cfg.num_classes,
        &mut |x| eval_probs(model, x),
    )
}
