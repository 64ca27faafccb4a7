//! One SS-Net training iteration, in the reference's order (the order matters: BatchNorm
//! running statistics move in every train-mode pass):
//!
//! 1. `logits, emb = net(x)` (train); argmax of `softmax(logits)` on the labelled and the
//!    unlabelled halves (`ops::argmax_softmax`: the reference's argmax of the probabilities,
//!    ties included, without a probability tensor); mask = correctly predicted foreground
//!    of the labelled half.
//! 2. Memory update from `projection_head` (EVAL mode, no gradient) of the masked embedding
//!    rows, selectors in train mode.
//! 3. Contrastive losses of `prediction_head(projection_head(rows))` (train mode) for every
//!    labelled voxel (true labels) and every unlabelled voxel (pseudo labels).
//! 4. Dice loss of the softmax of the labelled half, fused (`ops::softmax_dice`: logits in,
//!    d loss / d logits out; cross-entropy logged only), VAT's LDS on the batch.
//! 5. `loss = dice + w · (lds + 0.1 · (cl_l + cl_u))`, backward, SGD (momentum, weight decay;
//!    a parameter that has never received a gradient is not updated, as PyTorch).
//!
//! The losses are read back once, before the SGD update: a non-finite term, or a label out
//! of range (counted by the Dice pass), stops the step with its name and the iteration,
//! leaving the weights as they were.

use super::contrastive::contrastive_loss;
use super::memory::{gather_labels, MemoryOrder, PrototypeMemory};
use super::vat::{vat_loss, VatConfig};
use crate::autograd::{backward, no_grad};
use crate::error::{Error, Result};
use crate::nn::{Arch, Model, Pass};
use crate::ops::{self, BnMode};
use crate::tensor::{DType, Tensor};
use std::collections::{BTreeMap, BTreeSet};

/// Hyper-parameters of the objective and the optimiser.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrainerConfig {
    pub labeled_bs: usize,
    pub base_lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub consistency: f64,
    pub consistency_rampup: f64,
    pub vat_xi: f32,
    pub vat_eps: f32,
    pub memory_per_class: usize,
    pub memory_order: MemoryOrder,
    /// Multiply the learning rate by `lr_gamma` every `lr_step` iterations (None: constant).
    pub lr_step: Option<u64>,
    pub lr_gamma: f32,
    /// Dropout in the network's train-mode passes (the reference trains with it).
    pub dropout: bool,
}

impl TrainerConfig {
    /// The reference's LA (3D) settings.
    pub fn la() -> Self {
        TrainerConfig {
            labeled_bs: 2,
            base_lr: 0.01,
            momentum: 0.9,
            weight_decay: 1e-4,
            consistency: 1.0,
            consistency_rampup: 40.0,
            vat_xi: 10.0,
            vat_eps: 10.0,
            memory_per_class: 32,
            memory_order: MemoryOrder::Ascending,
            lr_step: Some(2500),
            lr_gamma: 0.1,
            dropout: true,
        }
    }
    /// The reference's ACDC (2D) settings.
    pub fn acdc() -> Self {
        TrainerConfig {
            labeled_bs: 12,
            consistency: 0.1,
            consistency_rampup: 200.0,
            vat_eps: 6.0,
            lr_step: None,
            ..Self::la()
        }
    }
}

/// One step's inputs: the batch (labelled samples first), the labels of the labelled
/// samples (u32), VAT's uniform noise (or a seed to draw it on the GPU), dropout seeds.
pub struct StepInputs<'a> {
    pub x: &'a Tensor,
    pub labels: &'a Tensor,
    /// U[0, 1) noise of x's shape; None = drawn from `seed` on the GPU.
    pub rand_u: Option<&'a Tensor>,
    pub seed: u64,
}

/// Every loss term of a step, as logged.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct StepLosses {
    pub iter: u64,
    pub loss: f32,
    pub loss_dice: f32,
    pub loss_ce: f32,
    pub loss_lds: f32,
    pub loss_cl_l: f32,
    pub loss_cl_u: f32,
    pub consistency_weight: f32,
    pub lr: f32,
}

/// The model, the memory and the optimiser state.
pub struct Trainer {
    pub model: Model,
    pub cfg: TrainerConfig,
    pub memory: PrototypeMemory,
    /// Completed iterations.
    pub iter: u64,
    pub lr: f32,
    /// SGD momentum buffers of the parameters that have been updated at least once.
    momentum: BTreeMap<String, Tensor>,
    /// Parameters that have received a gradient at least once (PyTorch keeps their zeroed
    /// gradient and keeps updating them).
    has_grad: BTreeSet<String>,
}

impl Trainer {
    pub fn new(model: Model, cfg: TrainerConfig) -> Trainer {
        let memory = PrototypeMemory::new(
            model.cfg.num_classes,
            cfg.memory_per_class,
            cfg.memory_order,
        );
        let lr = cfg.base_lr;
        Trainer {
            model,
            cfg,
            memory,
            iter: 0,
            lr,
            momentum: BTreeMap::new(),
            has_grad: BTreeSet::new(),
        }
    }

    /// SGD momentum buffers by parameter name (checkpoints and resume).
    pub fn momentum_buffers(&self) -> &BTreeMap<String, Tensor> {
        &self.momentum
    }

    /// Restore optimiser state saved from [`Trainer::momentum_buffers`].
    pub fn restore(
        &mut self,
        iter: u64,
        lr: f32,
        momentum: BTreeMap<String, Vec<f32>>,
    ) -> Result<()> {
        self.iter = iter;
        self.lr = lr;
        self.momentum.clear();
        self.has_grad.clear();
        for (k, v) in momentum {
            let p = self.model.params().get(&k).ok_or_else(|| {
                Error::msg(format!("momentum buffer for unknown parameter '{k}'"))
            })?;
            if v.len() != p.numel() {
                return Err(Error::msg(format!(
                    "momentum buffer '{k}' has {} values for {} parameters",
                    v.len(),
                    p.numel()
                )));
            }
            self.momentum
                .insert(k.clone(), Tensor::from_f32(&self.model.gpu, &v, p.shape())?);
            self.has_grad.insert(k);
        }
        Ok(())
    }

    /// The consistency weight this step uses. The reference's 3D script increments its
    /// counter before computing it, the 2D script after.
    pub fn consistency_weight(&self) -> f64 {
        let t = match self.model.cfg.arch {
            Arch::VNet => self.iter + 1,
            Arch::UNet => self.iter,
        };
        super::consistency_weight(self.cfg.consistency, self.cfg.consistency_rampup, t)
    }

    /// One training iteration.
    pub fn step(&mut self, inp: &StepInputs<'_>) -> Result<StepLosses> {
        let model = &self.model;
        let gpu = model.gpu.clone();
        let x = inp.x;
        let b = x.shape()[0];
        let l = self.cfg.labeled_bs;
        if l == 0 || l >= b {
            return Err(Error::config(format!(
                "labelled batch {l} must be at least 1 and smaller than the batch {b}"
            )));
        }
        let mut lshape = vec![l];
        lshape.extend_from_slice(&x.shape()[2..]);
        inp.labels.expect_dtype("train step labels", DType::U32)?;
        inp.labels.expect_shape("train step labels", &lshape)?;
        let seeds = |k: u64| {
            if self.cfg.dropout {
                Some(inp.seed.wrapping_mul(0x9E37_79B9).wrapping_add(k))
            } else {
                None
            }
        };

        // 1. the network on the whole batch
        let (logits, emb) = model.forward(x, Pass::train(seeds(1)))?;
        let pred_l = ops::argmax_softmax(&logits, 0, l)?;
        let pseudo = ops::argmax_softmax(&logits, l, b - l)?;
        let labels_flat = inp.labels.reshape(&[inp.labels.numel()])?;
        let mask = ops::correct_foreground(&pred_l.reshape(&[pred_l.numel()])?, &labels_flat)?;
        let rows_l = ops::to_rows(&ops::narrow_batch(&emb, 0, l)?)?; // [L·S, 16]

        // 2. memory update
        no_grad(|| -> Result<()> {
            let (sel, idx, count) = ops::masked_rows(&rows_l.detach(), &mask)?;
            if count == 0 {
                return Ok(());
            }
            let proj = model.projection_head(&sel, BnMode::Eval)?;
            let lab = gather_labels(&labels_flat, &idx, count)?;
            self.memory.update(model, &proj, &lab)
        })?;

        // 3. contrastive losses
        let pred_feat_l = model.prediction_head(
            &model.projection_head(&rows_l, BnMode::Train)?,
            BnMode::Train,
        )?;
        let cl_l = contrastive_loss(model, &pred_feat_l, &labels_flat, &self.memory)?;
        let rows_u = ops::to_rows(&ops::narrow_batch(&emb, l, b - l)?)?;
        let pred_feat_u = model.prediction_head(
            &model.projection_head(&rows_u, BnMode::Train)?,
            BnMode::Train,
        )?;
        let cl_u = contrastive_loss(
            model,
            &pred_feat_u,
            &pseudo.reshape(&[pseudo.numel()])?,
            &self.memory,
        )?;

        // 4. supervised terms and VAT
        let logits_l = ops::narrow_batch(&logits, 0, l)?;
        let loss_ce = no_grad(|| ops::cross_entropy(&logits_l.detach(), inp.labels))?;
        let dice_kind = match model.cfg.arch {
            Arch::VNet => ops::DiceKind::BinaryForeground,
            Arch::UNet => ops::DiceKind::MeanClasses,
        };
        let dice = ops::softmax_dice(&logits_l, inp.labels, dice_kind)?;
        let loss_dice = dice.loss;
        let drawn;
        let rand_u = match inp.rand_u {
            Some(u) => u,
            None => {
                drawn = ops::uniform(&gpu, x.shape(), inp.seed ^ 0x5641_545F_4E4F_4953)?;
                &drawn
            }
        };
        let vat_seeds = self.cfg.dropout.then(|| {
            [
                seeds(2).unwrap_or(0),
                seeds(3).unwrap_or(0),
                seeds(4).unwrap_or(0),
            ]
        });
        let (lds, _) = vat_loss(
            model,
            x,
            rand_u,
            VatConfig {
                xi: self.cfg.vat_xi,
                eps: self.cfg.vat_eps,
            },
            vat_seeds,
        )?;

        // 5. total loss, read back once, backward, SGD
        let w = self.consistency_weight() as f32;
        let cl = ops::add(&cl_l.loss, &cl_u.loss)?;
        let inner = ops::lincomb(&lds, 1.0, &cl, 0.1)?;
        let loss = ops::lincomb(&loss_dice, 1.0, &inner, w)?;
        let vals = ops::stack_scalars(&[
            &loss,
            &loss_dice,
            &loss_ce,
            &lds,
            &cl_l.loss,
            &cl_u.loss,
            &dice.invalid_labels,
        ])?
        .to_f32()?;
        if vals[6] != 0.0 {
            return Err(Error::op(
                "softmax_dice_loss",
                format!(
                    "{} labels out of range for {} classes at iteration {}: stopping before the update",
                    vals[6],
                    logits.shape()[1],
                    self.iter + 1
                ),
            ));
        }
        // Name every non-finite term (the total is non-finite whenever one is): which term
        // blew up says where to look.
        let names = ["loss", "dice", "ce", "lds", "cl_l", "cl_u"];
        let bad: Vec<String> = names
            .iter()
            .zip(&vals)
            .skip(1)
            .filter(|(_, v)| !v.is_finite())
            .map(|(n, v)| format!("{n} = {v}"))
            .collect();
        if !bad.is_empty() || !vals[0].is_finite() {
            let terms = if bad.is_empty() {
                format!("the weighted total = {} (every term is finite)", vals[0])
            } else {
                bad.join(", ")
            };
            return Err(Error::msg(format!(
                "non-finite loss at iteration {}: {terms}; stopping before the update",
                self.iter + 1
            )));
        }
        let grads = backward(&loss)?;
        let zero_prefixes: Vec<String> = cl_l
            .zero_grad_params
            .iter()
            .chain(&cl_u.zero_grad_params)
            .cloned()
            .collect();
        let lr = self.lr;
        for (name, param) in self.model.params() {
            let g = match grads.get(param) {
                Some(g) => Some(g.clone()),
                None if zero_prefixes.iter().any(|p| name.starts_with(p))
                    || self.has_grad.contains(name) =>
                {
                    Some(Tensor::zeros(&gpu, param.shape())?)
                }
                None => None,
            };
            let Some(g) = g else { continue };
            self.has_grad.insert(name.clone());
            let first = !self.momentum.contains_key(name);
            let buf = match self.momentum.get(name) {
                Some(b) => b.clone(),
                None => {
                    let b = Tensor::empty(&gpu, param.shape(), DType::F32, "momentum")?;
                    self.momentum.insert(name.clone(), b.clone());
                    b
                }
            };
            ops::sgd_step(
                param,
                &g,
                &buf,
                lr,
                self.cfg.momentum,
                self.cfg.weight_decay,
                first,
            )?;
        }
        drop(grads);
        self.iter += 1;
        if let Some(step) = self.cfg.lr_step {
            if step > 0 && self.iter.is_multiple_of(step) {
                self.lr = self.cfg.base_lr * self.cfg.lr_gamma.powi((self.iter / step) as i32);
            }
        }
        gpu.flush()?;
        Ok(StepLosses {
            iter: self.iter,
            loss: vals[0],
            loss_dice: vals[1],
            loss_ce: vals[2],
            loss_lds: vals[3],
            loss_cl_l: vals[4],
            loss_cl_u: vals[5],
            consistency_weight: w,
            lr,
        })
    }
}
