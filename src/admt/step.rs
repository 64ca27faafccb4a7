//! One AD-MT training iteration on the GPU, in the official order (ADMT.md §4; the order
//! matters: BatchNorm running statistics move in every train-mode pass):
//!
//! 1. The teachers on the weak unlabelled view, no gradient: the teacher that this step
//!    updates in TRAIN mode (dropout, batch statistics, running statistics moved), the other
//!    in eval mode; T1 first. Their softmaxes fused per voxel (`ops::admt::teacher_fuse`:
//!    entropy weights as released, or the plain mean) into label, confidence and conflict.
//! 2. The strong view: while teacher 2 is updated, a coin (`u < cutmix_prob`; always true at
//!    the official 1.0) then CutMix of the weak images and of the three teacher maps; while
//!    teacher 1 is updated, the given intensity-augmented view with the maps unmixed.
//! 3. ONE student pass (train mode) over `cat(x_l, x_w, x_s)`, so BatchNorm sees L + 2U
//!    samples; the student's label and confidence on the UNMIXED weak view (no gradient).
//! 4. `L_sup = ½ (CE + DiceLoss)` on the labelled part (AD-MT's Dice: background included,
//!    squared denominators, ε 1e-5). The compromise label (student wins where the teachers
//!    disagree and it is more confident), dropped below the threshold; `L_u` on the strong
//!    view: masked cross-entropy (LA) or masked Dice (ACDC). With every voxel dropped the
//!    masked CE is 0 with no gradient (PyTorch would give NaN, ADMT.md §7.7).
//! 5. `L = L_sup + λ(k) L_u`; the terms read back once (the only readback), checked finite,
//!    then backward and SGD (momentum, weight decay, PyTorch's semantics) at the poly LR.
//! 6. EMA of every parameter AND BatchNorm buffer of the student into the updated teacher
//!    only, `α = ema_alpha(k, R, 0.99)` (a copy while ⌊k/2⌋ < R), up to 16 tensors per
//!    dispatch ([`ema_teacher`]); the alternation advances;
//!    the next step's LR is `poly_lr(base, k, max)`.
//!
//! One seeded RNG (PCG32) drives the initialisation seeds, the alternation periods, the
//! CutMix draws and the dropout seeds, so a run is reproducible bit for bit.

use super::cutmix::CutMix;
use super::schedule::{ema_alpha, poly_lr, unsup_weight, Teacher, TeacherSchedule};
use crate::autograd::{backward, no_grad};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Model, ModelConfig, Pass, Variant};
use crate::ops::{self, admt as adops, DiceKind, DiceTarget};
use crate::reference::admt::Fusion;
use crate::tensor::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg32;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The unsupervised loss on the strong view (ADMT.md §4 step 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsupLoss {
    /// LA: cross-entropy averaged over the confident voxels (ignore-index CE).
    MaskedCe,
    /// ACDC: AD-MT's Dice loss with the unconfident voxels ignored.
    MaskedDice,
}

/// Hyper-parameters of an AD-MT run (ADMT.md §3).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdmtConfig {
    pub base_lr: f64,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Iterations of the run (the poly LR reaches 0 there).
    pub max_iterations: u64,
    pub lr_power: f64,
    /// λ_u and the ramp length R (epochs of 150 iterations); R also sets the EMA warm-up.
    pub unsup_weight: f64,
    pub rampup: u64,
    pub ema_cap: f64,
    /// Confidence threshold θ of the pseudo-labels.
    pub threshold: f32,
    /// Alternation periods are uniform in 1..=max_period.
    pub max_period: u32,
    pub cutmix_prob: f64,
    pub fusion: Fusion,
    pub temperature: f32,
    pub unsup: UnsupLoss,
    /// Dropout in the train-mode passes (the official networks train with it).
    pub dropout: bool,
}

impl AdmtConfig {
    /// The official LA settings (C3).
    pub fn la() -> Self {
        AdmtConfig {
            base_lr: 0.01,
            momentum: 0.9,
            weight_decay: 1e-4,
            max_iterations: 15000,
            lr_power: 0.9,
            unsup_weight: 2.0,
            rampup: 40,
            ema_cap: 0.99,
            threshold: 0.8,
            max_period: 19,
            cutmix_prob: 1.0,
            fusion: Fusion::Entropy,
            temperature: 1.0,
            unsup: UnsupLoss::MaskedCe,
            dropout: true,
        }
    }

    /// The official ACDC settings (C2).
    pub fn acdc() -> Self {
        AdmtConfig {
            max_iterations: 30000,
            rampup: 50,
            threshold: 0.95,
            max_period: 50,
            unsup: UnsupLoss::MaskedDice,
            ..Self::la()
        }
    }
}

/// One step's batch: the labelled weak images `[L, C, ...]` with their u32 labels
/// `[L, ...]`, the unlabelled weak images `[U, C, ...]` and their strong views (same shape;
/// used only while teacher 1 is updated).
pub struct AdmtInputs<'a> {
    pub labeled: &'a Tensor,
    pub labels: &'a Tensor,
    pub weak: &'a Tensor,
    pub strong: &'a Tensor,
}

/// Every term of a step, as logged.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdmtLosses {
    /// Completed iterations after this step (k + 1).
    pub iter: u64,
    pub loss: f32,
    pub loss_sup: f32,
    pub loss_ce: f32,
    pub loss_dice: f32,
    pub loss_unsup: f32,
    pub unsup_weight: f32,
    pub lr: f32,
    pub ema_alpha: f32,
    /// The teacher this step updated, and whether its strong view was CutMix.
    pub updated: Teacher,
    pub cutmix: bool,
}

/// The random draws of one step, in the order the trainer's RNG makes them: the dropout seeds
/// of the teachers' and the student's train-mode passes, then, while teacher 2 is updated,
/// the CutMix coin and (when it is below `cutmix_prob`) the CutMix draw. Given explicitly by
/// the golden tests, which replay the official code's draws.
#[derive(Clone, Debug, PartialEq)]
pub struct StepDraws {
    pub teacher_seed: u64,
    pub student_seed: u64,
    /// The coin of the CutMix test: CutMix while teacher 2 is updated and `coin <
    /// cutmix_prob`; None (no CutMix) while teacher 1 is.
    pub coin: Option<f64>,
    /// The CutMix draw, used when the coin says CutMix (an error if it is then missing).
    pub cutmix: Option<CutMix>,
}

/// Student, two teachers, SGD momentum, the alternation, the step counter and the RNG.
pub struct AdmtTrainer {
    pub student: Model,
    pub teacher1: Model,
    pub teacher2: Model,
    pub cfg: AdmtConfig,
    pub schedule: TeacherSchedule,
    /// Completed iterations: the next step is step k = `iter`.
    pub iter: u64,
    /// The learning rate of the next step.
    pub lr: f32,
    pub(crate) rng: Pcg32,
    pub(crate) momentum: BTreeMap<String, Tensor>,
    /// Keep each step's target (compromise label, [`ops::IGNORE`] below the threshold) in
    /// [`AdmtTrainer::last_target`] (golden tests; off in training).
    pub keep_targets: bool,
    pub last_target: Option<Tensor>,
}

/// Samples stacked along the batch axis (tensors of one dtype whose shapes agree past axis
/// 0), off the tape: the inputs of the student's single pass.
fn cat_batch(xs: &[&Tensor]) -> Result<Tensor> {
    let first = xs[0];
    let per: usize = first.shape()[1..].iter().product();
    let flat: Vec<Tensor> = xs
        .iter()
        .map(|x| {
            if x.shape()[1..] != first.shape()[1..] {
                return Err(Error::op(
                    "cat_batch",
                    format!("samples {:?} beside {:?}", x.shape(), first.shape()),
                ));
            }
            x.detach().reshape(&[1, x.numel(), 1])
        })
        .collect::<Result<_>>()?;
    let refs: Vec<&Tensor> = flat.iter().collect();
    let cat = ops::concat_channels(&refs)?;
    let mut shape = first.shape().to_vec();
    shape[0] = cat.numel() / per.max(1);
    cat.reshape(&shape)
}

/// `θ_T ← α·θ_T + (1 − α)·θ_S` for every parameter and BatchNorm buffer of `teacher`, paired
/// with the student's tensor of the same name (ADMT.md §4 step 11), in few dispatches
/// ([`ops::ema::ema_many`]: up to 16 tensors each, same bits as one dispatch per tensor).
pub fn ema_teacher(teacher: &Model, student: &Model, alpha: f32) -> Result<()> {
    let pairs = teacher
        .params()
        .iter()
        .chain(teacher.buffers())
        .map(|(name, t)| Ok((t, student.get(name)?)))
        .collect::<Result<Vec<_>>>()?;
    ops::ema::ema_many(&pairs, alpha)
}

impl AdmtTrainer {
    /// Three independently initialised heads-free networks (student, teacher 1, teacher 2,
    /// in that order, their seeds drawn from `seed`'s stream), then the first alternation
    /// period, as the official script builds them.
    pub fn init(gpu: &Arc<Gpu>, mcfg: ModelConfig, cfg: AdmtConfig, seed: u64) -> Result<Self> {
        let mut rng = Pcg32::seed_from_u64(seed);
        let seeds: [u64; 3] = [rng.random(), rng.random(), rng.random()];
        let [s, t1, t2] = seeds.map(|s| Model::init_variant(gpu, mcfg, Variant::Admt, s));
        Self::new(s?, t1?, t2?, cfg, rng)
    }

    /// A trainer from given networks (same configuration and variant) and an RNG that then
    /// draws the first alternation period.
    pub fn new(
        student: Model,
        teacher1: Model,
        teacher2: Model,
        cfg: AdmtConfig,
        mut rng: Pcg32,
    ) -> Result<Self> {
        for (name, t) in [("teacher 1", &teacher1), ("teacher 2", &teacher2)] {
            if t.cfg != student.cfg || t.variant() != student.variant() {
                return Err(Error::config(format!(
                    "{name} is a {} {:?}, the student a {} {:?}",
                    t.variant().name(),
                    t.cfg,
                    student.variant().name(),
                    student.cfg
                )));
            }
        }
        let schedule = TeacherSchedule::new(cfg.max_period, &mut rng);
        let lr = cfg.base_lr as f32;
        Ok(AdmtTrainer {
            student,
            teacher1,
            teacher2,
            cfg,
            schedule,
            iter: 0,
            lr,
            rng,
            momentum: BTreeMap::new(),
            keep_targets: false,
            last_target: None,
        })
    }

    pub fn teacher(&self, t: Teacher) -> &Model {
        match t {
            Teacher::One => &self.teacher1,
            Teacher::Two => &self.teacher2,
        }
    }

    /// SGD momentum buffers by parameter name (absent before the first step).
    pub fn momentum_buffers(&self) -> &BTreeMap<String, Tensor> {
        &self.momentum
    }

    fn check_inputs(&self, inp: &AdmtInputs<'_>) -> Result<(usize, usize)> {
        let op = "admt step";
        let x = inp.weak;
        let (l, u) = (inp.labeled.shape()[0], x.shape()[0]);
        if l == 0 || u == 0 {
            return Err(Error::config(format!(
                "AD-MT needs labelled and unlabelled samples, got {l} and {u}"
            )));
        }
        if inp.labeled.shape()[1..] != x.shape()[1..] {
            return Err(Error::op(
                op,
                format!(
                    "labelled images {:?} beside unlabelled {:?}",
                    inp.labeled.shape(),
                    x.shape()
                ),
            ));
        }
        inp.strong.expect_shape(op, x.shape())?;
        let mut lshape = vec![l];
        lshape.extend_from_slice(&x.shape()[2..]);
        inp.labels.expect_dtype(op, DType::U32)?;
        inp.labels.expect_shape(op, &lshape)?;
        Ok((l, u))
    }

    /// One training iteration (ADMT.md §4), its draws from the trainer's RNG.
    pub fn step(&mut self, inp: &AdmtInputs<'_>) -> Result<AdmtLosses> {
        let (_, u) = self.check_inputs(inp)?;
        let draws = self.draw(u, &inp.weak.shape()[2..]);
        self.step_with(inp, &draws)
    }

    /// This step's draws from the trainer's RNG, for `u` unlabelled samples of spatial shape
    /// `dims`.
    pub fn draw(&mut self, u: usize, dims: &[usize]) -> StepDraws {
        let teacher_seed: u64 = self.rng.random();
        let student_seed: u64 = self.rng.random();
        let (mut coin, mut cutmix) = (None, None);
        if self.schedule.updated == Teacher::Two {
            let c: f64 = self.rng.random();
            coin = Some(c);
            if c < self.cfg.cutmix_prob {
                cutmix = Some(CutMix::draw(u, dims, &mut self.rng));
            }
        }
        StepDraws {
            teacher_seed,
            student_seed,
            coin,
            cutmix,
        }
    }

    /// One training iteration with the given draws (see [`StepDraws`]); the alternation's next
    /// period still comes from the trainer's RNG.
    pub fn step_with(&mut self, inp: &AdmtInputs<'_>, draws: &StepDraws) -> Result<AdmtLosses> {
        let (l, u) = self.check_inputs(inp)?;
        let gpu = self.student.gpu.clone();
        let cfg = self.cfg.clone();
        let k = self.iter;
        let updated = self.schedule.updated;
        let spatial = inp.weak.shape().len() - 2;
        let (teacher_seed, student_seed) = (draws.teacher_seed, draws.student_seed);
        let dropout = |seed: u64| cfg.dropout.then_some(seed);

        // 1. the teachers, fused
        let maps = no_grad(|| -> Result<adops::TeacherMaps> {
            let pass = |t: Teacher| {
                if t == updated {
                    Pass::train(dropout(teacher_seed))
                } else {
                    Pass::EVAL
                }
            };
            let p1 = ops::softmax(&self.teacher1.logits(inp.weak, pass(Teacher::One))?)?;
            let p2 = ops::softmax(&self.teacher2.logits(inp.weak, pass(Teacher::Two))?)?;
            adops::teacher_fuse(&p1, &p2, cfg.fusion, cfg.temperature)
        })?;

        // 2. the strong view (and the maps, mixed with the images)
        let mut cutmix = false;
        let (x_s, maps) = match updated {
            Teacher::One => (inp.strong.clone(), maps),
            Teacher::Two => {
                // The coin decides (u < cutmix_prob, ADMT.md §4 step 3); the draw must then
                // be there.
                let mix = draws.coin.is_some_and(|c| c < cfg.cutmix_prob);
                if mix && draws.cutmix.is_none() {
                    return Err(Error::op(
                        "admt step",
                        "the CutMix coin is below cutmix_prob but no CutMix draw was given",
                    ));
                }
                if let Some(draw) = draws.cutmix.as_ref().filter(|_| mix) {
                    cutmix = true;
                    if draw.perm.len() != u || draw.boxes.len() != u {
                        return Err(Error::op(
                            "admt step",
                            format!(
                                "a CutMix draw for {} samples, the batch has {u}",
                                draw.perm.len()
                            ),
                        ));
                    }
                    let boxes = Tensor::from_u32(&gpu, &adops::cutmix_boxes(draw)?, &[u * 7])?;
                    let mix = |t: &Tensor| adops::cutmix(t, &boxes, spatial);
                    let mixed = adops::TeacherMaps {
                        label: mix(&maps.label)?,
                        conf: mix(&maps.conf)?,
                        conflict: mix(&maps.conflict)?,
                    };
                    (mix(inp.weak)?, mixed)
                } else {
                    (inp.weak.clone(), maps)
                }
            }
        };

        // 3. one student pass; its own label on the unmixed weak view
        let x = cat_batch(&[inp.labeled, inp.weak, &x_s])?;
        let logits = self
            .student
            .logits(&x, Pass::train(dropout(student_seed)))?;
        let z_l = ops::narrow_batch(&logits, 0, l)?;
        let z_s = ops::narrow_batch(&logits, l + u, u)?;
        let (s_label, s_conf) =
            no_grad(|| adops::student_max(&ops::narrow_batch(&logits.detach(), l, u)?))?;

        // 4. supervised and unsupervised terms
        let loss_ce = ops::cross_entropy(&z_l, inp.labels)?;
        let dice = ops::softmax_dice(&z_l, inp.labels, DiceKind::MeanClassesAdmt)?;
        let loss_sup = ops::lincomb(&loss_ce, 0.5, &dice.loss, 0.5)?;
        let target = adops::compromise_targets(&maps, &s_label, &s_conf, cfg.threshold)?;
        self.last_target = self.keep_targets.then(|| target.clone());
        let loss_unsup = match cfg.unsup {
            UnsupLoss::MaskedCe => ops::masked_cross_entropy(&z_s, &target)?,
            UnsupLoss::MaskedDice => ops::dice_loss(
                &ops::softmax(&z_s)?,
                DiceTarget::Labels(&target),
                DiceKind::MeanClassesAdmt,
            )?,
        };
        let w = unsup_weight(k, cfg.unsup_weight, cfg.rampup) as f32;
        let loss = ops::lincomb(&loss_sup, 1.0, &loss_unsup, w)?;

        // 5. the only readback, then backward and SGD
        let vals = ops::stack_scalars(&[
            &loss,
            &loss_sup,
            &loss_ce,
            &dice.loss,
            &loss_unsup,
            &dice.invalid_labels,
        ])?
        .to_f32()?;
        if vals[5] != 0.0 {
            return Err(Error::op(
                "admt step",
                format!(
                    "{} labels out of range for {} classes at iteration {}: stopping before the update",
                    vals[5],
                    logits.shape()[1],
                    k + 1
                ),
            ));
        }
        let names = ["loss", "loss_sup", "loss_ce", "loss_dice", "loss_unsup"];
        if let Some(i) = vals[..names.len()].iter().position(|v| !v.is_finite()) {
            return Err(Error::msg(format!(
                "non-finite {} ({}) at iteration {}: stopping before the update",
                names[i],
                vals[i],
                k + 1
            )));
        }
        let grads = backward(&loss)?;
        let lr = self.lr;
        for (name, param) in self.student.params() {
            // A parameter without a gradient is skipped, as PyTorch's SGD does.
            let Some(g) = grads.get(param) else { continue };
            let first = !self.momentum.contains_key(name);
            let buf = match self.momentum.get(name) {
                Some(b) => b.clone(),
                None => {
                    let b = Tensor::empty(&gpu, param.shape(), DType::F32, "momentum")?;
                    self.momentum.insert(name.clone(), b.clone());
                    b
                }
            };
            ops::sgd_step(param, g, &buf, lr, cfg.momentum, cfg.weight_decay, first)?;
        }
        drop(grads);

        // 6. EMA into the updated teacher, alternation, LR
        let alpha = ema_alpha(k, cfg.rampup, cfg.ema_cap) as f32;
        ema_teacher(self.teacher(updated), &self.student, alpha)?;
        self.schedule.advance(&mut self.rng);
        self.lr = poly_lr(cfg.base_lr, k, cfg.max_iterations, cfg.lr_power) as f32;
        self.iter = k + 1;
        gpu.flush()?;
        Ok(AdmtLosses {
            iter: self.iter,
            loss: vals[0],
            loss_sup: vals[1],
            loss_ce: vals[2],
            loss_dice: vals[3],
            loss_unsup: vals[4],
            unsup_weight: w,
            lr,
            ema_alpha: alpha,
            updated,
            cutmix,
        })
    }
}
