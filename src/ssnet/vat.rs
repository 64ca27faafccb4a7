//! Virtual adversarial training, as SS-Net's `VAT2d` / `VAT3d` (xi = 10, one power
//! iteration):
//!
//! ```text
//! pred = softmax(net(x))            no gradient; BatchNorm running statistics UPDATED
//! d = l2norm(u - 0.5)               per sample: d / (|d| + 1e-8), u ~ U[0, 1)
//! g = ∂ dist(softmax(net(x + xi·d)), pred) / ∂d     BatchNorm frozen; input-only backward
//! lds = dist(softmax(net(x + eps·l2norm(g))), pred)  BatchNorm frozen; on the tape
//! ```
//! 3D distance: binary Dice over the whole two-channel tensors; 2D: the 4-class soft Dice.
//! The reference computes weight gradients in the power iteration and discards them; here
//! `backward_wrt` asks for d's gradient alone.

use crate::autograd::{backward_wrt, no_grad};
use crate::error::{Error, Result};
use crate::nn::{Arch, Model, Pass};
use crate::ops::{self, DiceKind, DiceTarget};
use crate::tensor::Tensor;

/// VAT settings.
#[derive(Clone, Copy, Debug)]
pub struct VatConfig {
    pub xi: f32,
    pub eps: f32,
}

/// The distance between two probability maps for this architecture.
fn dist(model: &Model, p: &Tensor, q: &Tensor) -> Result<Tensor> {
    let kind = match model.cfg.arch {
        Arch::VNet => DiceKind::Whole,
        Arch::UNet => DiceKind::MeanClasses,
    };
    ops::dice_loss(p, DiceTarget::Soft(q), kind)
}

/// Per-sample L2 normalisation with the reference's `+ 1e-8` on the norm: d / (|d_n| + 1e-8).
/// Off the tape (the perturbation direction is a constant for the weights).
pub fn l2_normalize_samples(d: &Tensor) -> Result<Tensor> {
    let n = d.shape()[0];
    let per = d.numel() / n.max(1);
    ops::normalize_rows_plus_eps(&d.detach().reshape(&[n, per])?, 1e-8)?.reshape(d.shape())
}

/// The LDS loss (on the tape for the weights) and the adversarial direction. `rand_u` holds
/// U[0,1) noise of x's shape; `dropout` gives each of the three passes its own masks.
pub fn vat_loss(
    model: &Model,
    x: &Tensor,
    rand_u: &Tensor,
    cfg: VatConfig,
    dropout: Option<[u64; 3]>,
) -> Result<(Tensor, Tensor)> {
    if rand_u.shape() != x.shape() {
        return Err(Error::op(
            "vat",
            format!("noise {:?} for input {:?}", rand_u.shape(), x.shape()),
        ));
    }
    let seed = |i: usize| dropout.map(|d| d[i]);
    let pred = no_grad(|| -> Result<Tensor> {
        let (logits, _) = model.forward(x, Pass::train(seed(0)))?;
        ops::softmax(&logits)
    })?;
    let d0 = l2_normalize_samples(&ops::affine(rand_u, 1.0, -0.5)?)?;
    // Power iteration: gradient with respect to d only.
    let d = d0.with_grad();
    let xin = ops::axpy(x, cfg.xi, &d)?;
    let (logits, _) = model.forward(&xin, Pass::frozen(seed(1)))?;
    let adv = dist(model, &ops::softmax(&logits)?, &pred)?;
    let g = backward_wrt(&adv, &[&d])?
        .remove(&d)
        .ok_or_else(|| Error::op("vat", "no gradient reached the perturbation"))?;
    let d_adv = no_grad(|| l2_normalize_samples(&g))?;
    let xadv = ops::axpy(x, cfg.eps, &d_adv)?;
    let (logits, _) = model.forward(&xadv, Pass::frozen(seed(2)))?;
    let lds = dist(model, &ops::softmax(&logits)?, &pred)?;
    Ok((lds, d_adv))
}
