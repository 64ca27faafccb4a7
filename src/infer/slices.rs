//! 2D slice-wise inference, exactly as SS-Net's `test_single_volume` (`test_ACDC.py`,
//! `val_2d.py`): for every slice `k` of a `[S, H, W]` volume, `zoom(slice, (256 / H, 256 / W),
//! order=0)`, the network in eval mode, argmax over the softmax's channels, and
//! `zoom(pred, (H / 256, W / 256), order=0)` back to `H × W`. The zooms follow scipy's
//! semantics ([`crate::metrics::zoom_nearest`], output shapes by [`zoomed_shape`]); several
//! slices share one forward pass.

use super::{eval_probs, Prediction};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::metrics::{zoom_nearest, zoomed_shape};
use crate::nn::{Arch, Model};
use crate::ops;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Slice-wise settings. The default is SS-Net's ACDC evaluation: 256×256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceWise {
    /// The network's input size `[H, W]` every slice is zoomed to.
    pub size: [usize; 2],
    /// Slices per forward pass; 0 = automatic (up to 8, within the adapter's binding size).
    pub batch: usize,
}

impl Default for SliceWise {
    fn default() -> Self {
        SliceWise {
            size: [256, 256],
            batch: 0,
        }
    }
}

impl SliceWise {
    /// Slices per forward: `batch`, or as many as keep a 32-channel activation of the batch
    /// within half the adapter's storage binding, at most 8.
    pub fn batch_for(&self, gpu: &Gpu) -> usize {
        if self.batch > 0 {
            return self.batch;
        }
        let per = 32 * 4 * (self.size[0] * self.size[1]) as u64 * 2;
        (gpu.max_binding() / per.max(1)).clamp(1, 8) as usize
    }
}

/// Shape of one axis pair after scipy's `zoom` with factors `to / from` (rounded as scipy).
fn zoom_to(from: [usize; 2], to: [usize; 2]) -> [usize; 2] {
    let s = zoomed_shape(
        &from,
        &[to[0] as f64 / from[0] as f64, to[1] as f64 / from[1] as f64],
    );
    [s[0], s[1]]
}

/// The slice-wise pipeline with a given predictor: `probs_of` maps `[B, 1, h, w]` to class
/// probabilities `[B, num_classes, h, w]` on the GPU. `image` is row-major `[S, H, W]`.
/// With `want_probs`, [`Prediction::probs`] holds the probabilities zoomed back (order 0).
pub fn predict_slices_with(
    gpu: &Arc<Gpu>,
    image: &[f32],
    shape: [usize; 3],
    cfg: &SliceWise,
    num_classes: usize,
    want_probs: bool,
    probs_of: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Prediction> {
    let op = "predict_slices";
    let [s, h, w] = shape;
    let n = s * h * w;
    if image.len() != n || n == 0 {
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
    let zin = zoom_to([h, w], cfg.size);
    let back = zoom_to(zin, [h, w]);
    if back != [h, w] || zin.contains(&0) {
        return Err(Error::op(
            op,
            format!("a {h}×{w} slice zooms to {zin:?} and back to {back:?}, not to itself"),
        ));
    }
    let (hw, zhw) = (h * w, zin[0] * zin[1]);
    let mut labels = vec![0u8; n];
    let mut probs = if want_probs {
        vec![0f32; num_classes * n]
    } else {
        Vec::new()
    };
    let batch = cfg.batch_for(gpu);
    let mut k0 = 0;
    while k0 < s {
        let b = batch.min(s - k0);
        let mut x = Vec::with_capacity(b * zhw);
        for k in k0..k0 + b {
            x.extend(zoom_nearest(&image[k * hw..(k + 1) * hw], &[h, w], &zin)?);
        }
        let x = Tensor::from_f32(gpu, &x, &[b, 1, zin[0], zin[1]])?;
        let p = probs_of(&x)?;
        if p.shape() != [b, num_classes, zin[0], zin[1]] {
            return Err(Error::op(op, format!("the predictor returned {p:?} for {b} slices of {zin:?} and {num_classes} classes")));
        }
        // NaN probabilities argmax to background: a broken checkpoint or input would pass as
        // an empty segmentation. One scalar read back per batch catches it.
        let total = crate::autograd::no_grad(|| ops::sum_all(&p))?.to_f32()?;
        if !total.iter().all(|v| v.is_finite()) {
            return Err(Error::op(
                op,
                format!("non-finite probabilities in slices {k0}..{} (the checkpoint or the input is broken): stopping", k0 + b),
            ));
        }
        let am = ops::argmax_channels(&p)?.to_u32()?;
        let pz = if want_probs { p.to_f32()? } else { Vec::new() };
        for i in 0..b {
            let k = k0 + i;
            let lab: Vec<u8> = am[i * zhw..(i + 1) * zhw]
                .iter()
                .map(|&c| c as u8)
                .collect();
            labels[k * hw..(k + 1) * hw].copy_from_slice(&zoom_nearest(&lab, &zin, &[h, w])?);
            if want_probs {
                for c in 0..num_classes {
                    let src = &pz[(i * num_classes + c) * zhw..(i * num_classes + c + 1) * zhw];
                    probs[c * n + k * hw..c * n + (k + 1) * hw].copy_from_slice(&zoom_nearest(
                        src,
                        &zin,
                        &[h, w],
                    )?);
                }
            }
        }
        k0 += b;
    }
    Ok(Prediction {
        shape,
        num_classes,
        labels,
        probs,
    })
}

/// SS-Net's slice-wise prediction with a 2D model (UNet, one input channel) on `image`,
/// row-major `[S, H, W]` (`shape`), as the ACDC volumes.
pub fn predict_slices(
    model: &Model,
    image: &[f32],
    shape: [usize; 3],
    cfg: &SliceWise,
    want_probs: bool,
) -> Result<Prediction> {
    if model.cfg.arch != Arch::UNet || model.cfg.in_channels != 1 {
        return Err(Error::config(format!(
            "slice-wise prediction needs a 2D model with one input channel, got a {} with {} channels",
            model.cfg.arch.name(),
            model.cfg.in_channels
        )));
    }
    if cfg.size.iter().any(|&p| p % 16 != 0 || p == 0) {
        return Err(Error::config(format!(
            "slice size {:?}: the UNet needs every side a multiple of 16",
            cfg.size
        )));
    }
    predict_slices_with(
        &model.gpu,
        image,
        shape,
        cfg,
        model.cfg.num_classes,
        want_probs,
        &mut |x| eval_probs(model, x),
    )
}
