//! The method a run trains ([`super::TrainConfig::method`]): SS-Net's or AD-MT's trainer behind one
//! type, their step results, and AD-MT's inputs cut from a batch of the shared sampler.

use super::config::DatasetKind;
use super::data::Batch;
use crate::admt::{strong, AdmtLosses, AdmtTrainer};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::nn::Model;
use crate::ssnet::{StepLosses, Trainer};
use crate::tensor::Tensor;
use rand_pcg::Pcg32;
use std::sync::Arc;

/// The method's networks, step and state ([`super::TrainConfig::method`]).
pub enum Learner {
    /// SS-Net's trainer (one network, momentum, prototype memory).
    Ssnet(Box<Trainer>),
    /// AD-MT's trainer (student, two teachers, momentum, alternation, its RNG).
    Admt(Box<AdmtTrainer>),
}

impl Learner {
    /// The network that is validated and kept as `best` (AD-MT: the student).
    pub fn model(&self) -> &Model {
        match self {
            Learner::Ssnet(t) => &t.model,
            Learner::Admt(t) => &t.student,
        }
    }

    /// Completed iterations.
    pub fn iter(&self) -> u64 {
        match self {
            Learner::Ssnet(t) => t.iter,
            Learner::Admt(t) => t.iter,
        }
    }

    /// The next step's learning rate.
    pub fn lr(&self) -> f32 {
        match self {
            Learner::Ssnet(t) => t.lr,
            Learner::Admt(t) => t.lr,
        }
    }
}

/// One step's terms, of either method.
pub(crate) enum Stepped {
    Ssnet(StepLosses),
    Admt(AdmtLosses),
}

/// AD-MT's inputs from a batch of the shared sampler (labelled first): the labelled crops
/// and their labels, the weak unlabelled crops, and their strong views (LA:
/// [`strong::la_strong`] per crop; ACDC: [`strong::acdc_strong`] per slice), drawn from `rng`
/// only when `strong_used` (teacher 1 is updated: the only step that uses them), else the
/// weak crops again.
pub(crate) fn admt_tensors(
    gpu: &Arc<Gpu>,
    batch: &Batch,
    l: usize,
    patch: &[usize],
    kind: DatasetKind,
    strong_used: bool,
    rng: &mut Pcg32,
) -> Result<[Tensor; 4]> {
    let per: usize = patch.iter().product();
    let n = batch.x_shape[0];
    let shape = |k: usize| {
        let mut s = vec![k, 1];
        s.extend_from_slice(patch);
        s
    };
    let (xl, xu) = batch.x.split_at(l * per);
    let labeled = Tensor::from_f32(gpu, xl, &shape(l))?;
    let labels = Tensor::from_u32(gpu, &batch.labels, &batch.label_shape)?;
    let weak = Tensor::from_f32(gpu, xu, &shape(n - l))?;
    let strong = if strong_used {
        let mut s = Vec::with_capacity(xu.len());
        for crop in xu.chunks(per) {
            s.extend(match kind {
                DatasetKind::La => strong::la_strong(crop, rng),
                DatasetKind::Acdc => strong::acdc_strong(crop, patch[0], patch[1], rng),
            });
        }
        Tensor::from_f32(gpu, &s, &shape(n - l))?
    } else {
        weak.clone()
    };
    Ok([labeled, labels, weak, strong])
}
