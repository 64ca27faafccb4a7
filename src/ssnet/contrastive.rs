//! The class-to-class contrastive loss against the prototype memory
//! (`contrastive_class_to_class_learned_memory` of the reference).
//!
//! For each class c whose memory has more than one row and with more than one feature row:
//! ```text
//! Fn = l2norm(F_c); Mn = l2norm(memory_c); D = 1 - Fn·Mnᵀ               [m, n]
//! a = sigmoid(selector_c(F_c.detach())); a = a · m / Σa                 train mode
//! loss += mean(D · a · bᵀ)
//! ```
//! then loss /= number of classes. The memory-side weights b: the reference computes
//! `b.shape[0] / b.sum(dim=0) * b` on b of shape [1, n] (after a permute), which is b / b = 1
//! for every entry; its selector still runs in train mode (BatchNorm statistics move) and its
//! parameters receive a gradient that is exactly zero in exact arithmetic (±1e-18 in the
//! reference's fixture). We reproduce that: b = 1, the memory selector runs for its
//! statistics, and [`ContrastiveOut::zero_grad_params`] names the parameters that get an
//! explicit zero gradient (so SGD's weight decay and momentum still apply to them, as in
//! PyTorch). SSNET.md's "b · n / Σb" describes the intent, not what the code computes.
//!
//! The mean over [m, n] is computed as `Σᵢ aᵢ rᵢ / (n Σᵢ aᵢ)` with `rᵢ = Σⱼ Dᵢⱼ`, the same
//! quantity without the [m, n] temporaries.

use super::memory::PrototypeMemory;
use crate::autograd::no_grad;
use crate::error::Result;
use crate::nn::Model;
use crate::ops::{self, BnMode};
use crate::tensor::Tensor;

pub struct ContrastiveOut {
    /// The loss, `[1]`: a constant zero when no class takes part.
    pub loss: Tensor,
    /// Parameter-name prefixes whose parameters get an explicit zero gradient.
    pub zero_grad_params: Vec<String>,
}

/// The loss for features `feats` `[M, 32]` (on the tape) with u32 `labels` `[M]`.
pub fn contrastive_loss(
    model: &Model,
    feats: &Tensor,
    labels: &Tensor,
    memory: &PrototypeMemory,
) -> Result<ContrastiveOut> {
    let nc = model.cfg.num_classes;
    let mut total: Option<Tensor> = None;
    let mut zero_grad_params = vec![];
    for c in 0..nc {
        let Some(mem) = memory.entries.get(c).and_then(|e| e.as_ref()) else {
            continue;
        };
        let n = mem.shape()[0];
        if n <= 1 {
            continue;
        }
        let mask = ops::eq_value(labels, c as u32)?;
        let (fc, _, m) = ops::masked_rows(feats, &mask)?;
        if m <= 1 {
            continue;
        }
        let fnorm = ops::l2norm_rows(&fc, 1e-12)?;
        let mnorm = no_grad(|| ops::l2norm_rows(mem, 1e-12))?;
        let sim = ops::matmul(&fnorm, &ops::transpose_rows(&mnorm)?)?; // [m, n]
                                                                       // r_i = Σ_j (1 - S_ij) = n - Σ_j S_ij
        let r = ops::affine(&ops::sum_axes(&sim, &[1])?, -1.0, n as f32)?; // [m]
        let a =
            ops::sigmoid(&model.selector(c, false, &fc.detach(), BnMode::Train)?)?.reshape(&[m])?;
        // The memory selector: run for its BatchNorm statistics; its weights are exactly 1.
        no_grad(|| model.selector(c, true, &mnorm, BnMode::Train))?;
        zero_grad_params.push(format!("contrastive_class_selector_memory{c}."));
        let num = ops::sum_all(&ops::mul(&a, &r)?)?;
        let den = ops::scale(&ops::sum_all(&a)?, n as f32)?;
        let lc = ops::div(&num, &den)?;
        total = Some(match total {
            Some(t) => ops::add(&t, &lc)?,
            None => lc,
        });
    }
    let loss = match total {
        Some(t) => ops::scale(&t, 1.0 / nc as f32)?,
        None => Tensor::zeros(feats.gpu(), &[1])?,
    };
    Ok(ContrastiveOut {
        loss,
        zero_grad_params,
    })
}
