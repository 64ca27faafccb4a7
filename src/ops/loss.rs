//! Losses: cross-entropy (mean) on logits, and SS-Net's Dice family on probabilities.
//! Shader: `shaders/loss.wgsl`. The upstream gradient stays on the GPU (a `[1]` tensor read by
//! the backward kernels): no readback anywhere.
//!
//! Dice losses take the softmax output `p` [N, C, ...] and a target, either a u32 label map
//! [N, ...] (one-hot) or soft probabilities of p's shape. The target is a constant (SS-Net
//! always detaches it): only `p` gets a gradient.
//!
//! [`softmax_dice`] / [`softmax_dice_loss`] fuse the softmax into the label-map Dice: they
//! take the logits, compute the probabilities in registers, and write d loss / d logits in
//! one backward pass.

use super::reduce::sum_mid_raw;
use super::{launch, u32_of};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::Shader;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LossParams {
    n: u32,
    c: u32,
    s: u32,
    chunks: u32,
    chunk: u32,
    mode: u32,
    power: u32,
    _pad: u32,
    eps: f32,
    scale: f32,
    _p: [f32; 2],
}

fn base(op: &str, x: &Tensor) -> Result<(usize, usize, usize, LossParams)> {
    let (n, c, s) = super::softmax::ncs(op, x)?;
    let p = LossParams {
        n: u32_of(op, n)?,
        c: u32_of(op, c)?,
        s: u32_of(op, s)?,
        chunks: 1,
        chunk: 1,
        mode: 0,
        power: 1,
        _pad: 0,
        eps: 0.0,
        scale: 1.0,
        _p: [0.0; 2],
    };
    Ok((n, c, s, p))
}

fn check_labels(op: &str, x: &Tensor, labels: &Tensor) -> Result<()> {
    labels.expect_dtype(op, DType::U32)?;
    let mut want = vec![x.shape()[0]];
    want.extend_from_slice(&x.shape()[2..]);
    if labels.shape() != want.as_slice() {
        return Err(Error::op(
            op,
            format!(
                "labels {:?} for input {:?} (expected {want:?})",
                labels.shape(),
                x.shape()
            ),
        ));
    }
    Ok(())
}

/// Mean cross-entropy of `logits` [N, C, ...] against u32 `labels` [N, ...] (PyTorch
/// `F.cross_entropy`, reduction mean). Labels must be < C (validated when data is loaded).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let op = "cross_entropy";
    logits.expect_dtype(op, DType::F32)?;
    check_labels(op, logits, labels)?;
    let (n, _c, s, mut p) = base(op, logits)?;
    let per = Tensor::empty(logits.gpu(), &[n * s], DType::F32, op)?;
    launch(
        logits.gpu(),
        Shader::Loss,
        "ce_fwd",
        &p,
        &[logits.buffer(), labels.buffer(), per.buffer()],
        n * s,
    )?;
    let loss = sum_mid_raw(&per, 1, n * s, 1, 1.0 / (n * s) as f32)?;
    p.scale = 1.0 / (n * s) as f32;
    let (sx, sy) = (logits.detach(), labels.detach());
    Ok(record(op, loss, &[logits], move |g, _| {
        let gx = Tensor::empty(sx.gpu(), sx.shape(), DType::F32, "cross_entropy_bwd")?;
        launch(
            sx.gpu(),
            Shader::Loss,
            "ce_bwd",
            &p,
            &[sx.buffer(), sy.buffer(), g.buffer(), gx.buffer()],
            (p.n * p.s) as usize,
        )?;
        Ok(vec![Some(gx)])
    }))
}

/// The label that drops a voxel from [`masked_cross_entropy`] and from the label Dice losses
/// (AD-MT's unconfident pseudo-labels).
pub const IGNORE: u32 = u32::MAX;

/// Cross-entropy of `logits` [N, C, ...] averaged over the voxels whose u32 label is not
/// [`IGNORE`] (PyTorch `cross_entropy(ignore_index=...)`, reduction mean). With no valid voxel
/// the loss is 0 with a zero gradient, where PyTorch gives 0/0 = NaN (AD-MT's all-ignored
/// case, which would otherwise poison the weights). The count stays on the GPU.
pub fn masked_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let op = "masked_cross_entropy";
    logits.expect_dtype(op, DType::F32)?;
    check_labels(op, logits, labels)?;
    let (n, _c, s, p) = base(op, logits)?;
    let gpu = logits.gpu().clone();
    let per = Tensor::empty(&gpu, &[2 * n * s], DType::F32, op)?;
    launch(
        &gpu,
        Shader::Loss,
        "ce_fwd_masked",
        &p,
        &[logits.buffer(), labels.buffer(), per.buffer()],
        n * s,
    )?;
    let sums = sum_mid_raw(&per, 2, n * s, 1, 1.0)?;
    let loss = Tensor::empty(&gpu, &[1], DType::F32, op)?;
    let inv = Tensor::empty(&gpu, &[1], DType::F32, op)?;
    gpu.dispatch(
        Shader::Loss,
        "ce_masked_finish",
        &p,
        &[sums.buffer(), loss.buffer(), inv.buffer()],
        [1, 1, 1],
    )?;
    let (sx, sy) = (logits.detach(), labels.detach());
    Ok(record(op, loss, &[logits], move |g, _| {
        let gx = Tensor::empty(sx.gpu(), sx.shape(), DType::F32, "masked_cross_entropy_bwd")?;
        launch(
            sx.gpu(),
            Shader::Loss,
            "ce_bwd_masked",
            &p,
            &[
                sx.buffer(),
                sy.buffer(),
                g.buffer(),
                inv.buffer(),
                gx.buffer(),
            ],
            (p.n * p.s) as usize,
        )?;
        Ok(vec![Some(gx)])
    }))
}

/// Which Dice.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DiceKind {
    /// SS-Net's 3D supervised loss: `1 - (2Σp₁t₁ + ε)/(Σp₁ + Σt₁ + ε)` on channel 1, ε = 1e-8.
    BinaryForeground,
    /// SS-Net's 3D VAT distance: the same formula with sums over every channel and voxel.
    Whole,
    /// SSL4MIS DiceLoss: mean over classes of `1 - (2Σpt + s)/(Σt² + Σp² + s)`, s = 1e-10.
    MeanClasses,
    /// AD-MT's DiceLoss: the same with s = 1e-5; voxels labelled [`IGNORE`] drop out.
    MeanClassesAdmt,
}

impl DiceKind {
    fn mode(self) -> u32 {
        match self {
            DiceKind::BinaryForeground => 0,
            DiceKind::Whole => 1,
            DiceKind::MeanClasses | DiceKind::MeanClassesAdmt => 2,
        }
    }
    fn power(self) -> u32 {
        match self {
            DiceKind::MeanClasses | DiceKind::MeanClassesAdmt => 2,
            _ => 1,
        }
    }
    fn eps(self) -> f32 {
        match self {
            DiceKind::MeanClasses => 1e-10,
            DiceKind::MeanClassesAdmt => 1e-5,
            _ => 1e-8,
        }
    }
}

/// The target of a Dice loss.
pub enum DiceTarget<'a> {
    Labels(&'a Tensor),
    Soft(&'a Tensor),
}

/// A Dice loss of probabilities `p` [N, C, ...] against `target`: a `[1]` tensor.
pub fn dice_loss(p: &Tensor, target: DiceTarget<'_>, kind: DiceKind) -> Result<Tensor> {
    let op = match kind {
        DiceKind::BinaryForeground => "binary_dice_loss",
        DiceKind::Whole => "whole_dice_loss",
        DiceKind::MeanClasses => "dice_loss",
        DiceKind::MeanClassesAdmt => "admt_dice_loss",
    };
    p.expect_dtype(op, DType::F32)?;
    let (n, c, s, mut prm) = base(op, p)?;
    if kind == DiceKind::BinaryForeground && c < 2 {
        return Err(Error::op(
            op,
            format!("needs a foreground channel 1, input {:?}", p.shape()),
        ));
    }
    let (entry_partial, entry_bwd, tgt) = match target {
        DiceTarget::Labels(l) => {
            check_labels(op, p, l)?;
            ("dice_partial_labels", "dice_bwd_labels", l.detach())
        }
        DiceTarget::Soft(q) => {
            q.expect_dtype(op, DType::F32)?;
            if q.shape() != p.shape() {
                return Err(Error::op(
                    op,
                    format!("soft target {:?} for input {:?}", q.shape(), p.shape()),
                ));
            }
            ("dice_partial_soft", "dice_bwd_soft", q.detach())
        }
    };
    let total = n * s;
    // Chunks: enough workgroups to fill the device, each at least 4096 voxels.
    let chunks = (512 / c.max(1)).clamp(1, total.div_ceil(4096).max(1));
    let chunk = total.div_ceil(chunks).max(1);
    let chunks = total.div_ceil(chunk).max(1);
    prm.chunks = u32_of(op, chunks)?;
    prm.chunk = u32_of(op, chunk)?;
    prm.mode = kind.mode();
    prm.power = kind.power();
    prm.eps = kind.eps();
    let gpu = p.gpu().clone();
    let partial = Tensor::empty(&gpu, &[chunks * c * 3], DType::F32, op)?;
    gpu.dispatch(
        Shader::Loss,
        entry_partial,
        &prm,
        &[p.buffer(), tgt.buffer(), partial.buffer()],
        gpu.grid((chunks * c) as u64, 1)?,
    )?;
    let stats = sum_mid_raw(&partial, 1, chunks, c * 3, 1.0)?;
    let loss = Tensor::empty(&gpu, &[1], DType::F32, op)?;
    gpu.dispatch(
        Shader::Loss,
        "dice_loss_fwd",
        &prm,
        &[stats.buffer(), loss.buffer()],
        [1, 1, 1],
    )?;
    let sp = p.detach();
    Ok(record(op, loss, &[p], move |g, _| {
        let gp = Tensor::empty(sp.gpu(), sp.shape(), DType::F32, op)?;
        launch(
            sp.gpu(),
            Shader::Loss,
            entry_bwd,
            &prm,
            &[
                sp.buffer(),
                tgt.buffer(),
                stats.buffer(),
                g.buffer(),
                gp.buffer(),
            ],
            sp.numel(),
        )?;
        Ok(vec![Some(gp)])
    }))
}

/// SS-Net 3D: binary Dice of the softmax foreground channel against `labels == 1`.
pub fn binary_dice_loss(p: &Tensor, labels: &Tensor) -> Result<Tensor> {
    dice_loss(p, DiceTarget::Labels(labels), DiceKind::BinaryForeground)
}

/// SSL4MIS multi-class Dice (mean over all C classes) against a label map.
pub fn multiclass_dice_loss(p: &Tensor, labels: &Tensor) -> Result<Tensor> {
    dice_loss(p, DiceTarget::Labels(labels), DiceKind::MeanClasses)
}

/// SS-Net 2D soft Dice between two probability maps (the target is a constant).
pub fn soft_dice_loss(p: &Tensor, q: &Tensor) -> Result<Tensor> {
    dice_loss(p, DiceTarget::Soft(q), DiceKind::MeanClasses)
}

/// SS-Net 3D VAT distance: binary Dice over the whole two-channel tensors.
pub fn whole_dice_loss(p: &Tensor, q: &Tensor) -> Result<Tensor> {
    dice_loss(p, DiceTarget::Soft(q), DiceKind::Whole)
}

/// The fused softmax + Dice loss of [`softmax_dice`]: the loss (`[1]`, on the tape for the
/// logits) and how many labels were out of range (`[1]` f32, 0 when all are < C).
pub struct SoftmaxDice {
    pub loss: Tensor,
    pub invalid_labels: Tensor,
}

impl SoftmaxDice {
    /// Read back the out-of-range count (one 4-byte sync) and fail naming the op if any.
    pub fn check(&self) -> Result<()> {
        let bad = self.invalid_labels.item()?;
        if bad != 0.0 {
            return Err(Error::op(
                "softmax_dice_loss",
                format!("{bad} labels out of range (every label must be < the channel count)"),
            ));
        }
        Ok(())
    }
}

/// Dice loss of `softmax(logits)` over axis 1 against a u32 label map, in one forward pass
/// over the logits and one backward pass writing d loss / d logits: the same value as
/// `dice_loss(&softmax(logits)?, DiceTarget::Labels(labels), kind)` without the probability
/// tensor, its gradient, or the softmax backward.
///
/// logits [N, C, ...] f32, labels [N, ...] u32. Labels >= C are counted (never read past
/// the classes): the loss is then NaN and `invalid_labels` non-zero; nothing is read back
/// here ([`SoftmaxDice::check`] or [`softmax_dice_loss`] turn that into an error).
/// Deterministic: fixed per-chunk trees summed in chunk order, no atomics.
pub fn softmax_dice(logits: &Tensor, labels: &Tensor, kind: DiceKind) -> Result<SoftmaxDice> {
    let op = "softmax_dice_loss";
    logits.expect_dtype(op, DType::F32)?;
    let (n, c, s, mut prm) = base(op, logits)?;
    if c == 0 {
        return Err(Error::op(
            op,
            format!("no channels in {:?}", logits.shape()),
        ));
    }
    if kind == DiceKind::BinaryForeground && c < 2 {
        return Err(Error::op(
            op,
            format!("needs a foreground channel 1, input {:?}", logits.shape()),
        ));
    }
    check_labels(op, logits, labels)?;
    u32_of(op, logits.numel())?;
    let total = n * s;
    // One workgroup per (chunk, group of 4 classes); chunks of at least 4096 voxels, at most
    // 512 of them (enough workgroups to fill a device, a short second pass).
    let groups = c.div_ceil(4);
    let chunks = total.div_ceil(4096).clamp(1, 512);
    let chunk = total.div_ceil(chunks).max(1);
    let chunks = total.div_ceil(chunk).max(1);
    let width = 3 * c + 1;
    prm.chunks = u32_of(op, chunks)?;
    prm.chunk = u32_of(op, chunk)?;
    prm.mode = kind.mode();
    prm.power = kind.power();
    prm.eps = kind.eps();
    let gpu = logits.gpu().clone();
    let partial = Tensor::empty(&gpu, &[chunks * width], DType::F32, op)?;
    gpu.dispatch(
        Shader::Loss,
        "sdice_partial",
        &prm,
        &[logits.buffer(), labels.buffer(), partial.buffer()],
        gpu.grid((chunks * groups) as u64, 1)?,
    )?;
    let stats = sum_mid_raw(&partial, 1, chunks, width, 1.0)?;
    let loss = Tensor::empty(&gpu, &[1], DType::F32, op)?;
    let invalid_labels = Tensor::empty(&gpu, &[1], DType::F32, op)?;
    gpu.dispatch(
        Shader::Loss,
        "sdice_loss_fwd",
        &prm,
        &[stats.buffer(), loss.buffer(), invalid_labels.buffer()],
        [1, 1, 1],
    )?;
    let (sx, sy) = (logits.detach(), labels.detach());
    let loss = record(op, loss, &[logits], move |g, _| {
        let gx = Tensor::empty(sx.gpu(), sx.shape(), DType::F32, op)?;
        launch(
            sx.gpu(),
            Shader::Loss,
            "sdice_bwd",
            &prm,
            &[
                sx.buffer(),
                sy.buffer(),
                stats.buffer(),
                g.buffer(),
                gx.buffer(),
            ],
            (prm.n * prm.s) as usize,
        )?;
        Ok(vec![Some(gx)])
    });
    Ok(SoftmaxDice {
        loss,
        invalid_labels,
    })
}

/// [`softmax_dice`], with the labels checked: one 4-byte readback, and an error naming the
/// op when a label is >= C. The training step uses [`softmax_dice`] and checks the count
/// with its own single readback instead.
pub fn softmax_dice_loss(logits: &Tensor, labels: &Tensor, kind: DiceKind) -> Result<Tensor> {
    let d = softmax_dice(logits, labels, kind)?;
    d.check()?;
    Ok(d.loss)
}
