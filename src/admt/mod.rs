//! AD-MT (Zhao et al., ECCV 2024: "Alternate Diverse Teaching for semi-supervised medical
//! image segmentation"), as its official code computes it (`../shared/design/ADMT.md`).
//!
//! One student and two EMA teachers; one teacher at a time is EMA-updated, switching after a
//! random number of iterations. The teachers' softmaxes on the weak unlabelled view are fused
//! with entropy weights; where they disagree and the student is more confident, the student's
//! label wins; the student fits the confident labels on a strong view (intensity-augmented
//! while teacher 1 is updated, CutMix of the weak view while teacher 2 is).
//!
//! This floor holds what the method needs beyond the engine, each piece on the CPU and
//! checked against the design card:
//!
//! - [`schedule`]: which teacher is updated and when it switches, the EMA decay with its
//!   warm-up, the unsupervised weight's ramp, the poly learning rate;
//! - [`strong`]: the strong views (LA: brightness/contrast and clipped additive noise; ACDC:
//!   the uint8 colour jitter and Pillow's Gaussian blur);
//! - [`cutmix`]: the CutMix boxes (permutation, Beta(4,4), centres) and their pasting;
//! - [`step`]: the trainer (student, two teachers, momentum, alternation, RNG) and one
//!   training iteration on the GPU, over the heads-free networks ([`crate::nn::Variant::Admt`])
//!   and the kernels of [`crate::ops::admt`]; [`resume`]: its exact state in one file;
//! - the float64 twins of the per-voxel maths (fusion, compromise, masked losses) are in
//!   [`crate::reference::admt`].
//!
//! The training loop runs it as `ssnet train --method admt` ([`crate::train::run::Learner`]:
//! the shared sampler's batches split into labelled and weak crops, the strong views drawn
//! here on the CPU, the student validated and kept as `best`, this trainer's resume file as
//! `last`). Its golden fixtures come from the official code (`tools/admt_golden.py`,
//! `tests/golden_admt.rs`).

pub mod cutmix;
pub mod resume;
pub mod schedule;
pub mod step;
pub mod strong;

pub use resume::AdmtResume;
pub use schedule::{Teacher, TeacherSchedule};
pub use step::{
    ema_teacher, AdmtConfig, AdmtInputs, AdmtLosses, AdmtTrainer, StepDraws, UnsupLoss,
};
