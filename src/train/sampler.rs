//! The reference's `TwoStreamBatchSampler`: every batch is `labeled_bs` labelled indices
//! followed by `batch_size - labeled_bs` unlabelled ones.
//!
//! - An epoch is one pass over a fresh permutation of the labelled indices, in chunks of
//!   `labeled_bs`: `len(labelled) // labeled_bs` batches (a remainder is dropped).
//! - The unlabelled indices are drawn from an endless chain of fresh permutations, in chunks
//!   that may straddle two permutations. As in the reference, where the PyTorch `DataLoader`
//!   calls the sampler's `__iter__` once per epoch, the chain restarts with a fresh
//!   permutation at every epoch (the rest of the previous one is dropped).
//!
//! Seeded ([`rand_pcg::Pcg32`]); [`TwoStreamSampler::state`] / [`TwoStreamSampler::from_state`]
//! round-trip everything (RNG and positions) for resume.

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg32;
use serde::{Deserialize, Serialize};

/// A uniform permutation of `items` (Fisher-Yates, drawing from `rng`).
pub fn permutation(items: &[usize], rng: &mut Pcg32) -> Vec<usize> {
    let mut v = items.to_vec();
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
    v
}

/// Everything the sampler needs to continue exactly where it was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplerState {
    pub labelled: Vec<usize>,
    pub unlabelled: Vec<usize>,
    pub labeled_bs: usize,
    pub unlabeled_bs: usize,
    pub rng: Pcg32,
    /// Completed epochs.
    pub epoch: u64,
    /// This epoch's labelled permutation and the number of batches already taken from it
    /// (empty permutation: the next batch starts a new epoch).
    pub perm_l: Vec<usize>,
    pub batch_in_epoch: usize,
    /// The current unlabelled permutation and the position in it.
    pub perm_u: Vec<usize>,
    pub pos_u: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TwoStreamSampler {
    s: SamplerState,
}

impl TwoStreamSampler {
    /// Errors (one line) when a stream is smaller than its share of the batch.
    pub fn new(
        labelled: Vec<usize>,
        unlabelled: Vec<usize>,
        labeled_bs: usize,
        unlabeled_bs: usize,
        seed: u64,
    ) -> Result<Self> {
        if labeled_bs == 0 || labeled_bs > labelled.len() {
            return Err(Error::config(format!(
                "labeled_bs = {labeled_bs} is out of range: the labelled set has {} samples (need 1 ..= {})",
                labelled.len(),
                labelled.len()
            )));
        }
        if unlabeled_bs == 0 || unlabeled_bs > unlabelled.len() {
            return Err(Error::config(format!(
                "batch_size - labeled_bs = {unlabeled_bs} is out of range: the unlabelled set has {} samples",
                unlabelled.len()
            )));
        }
        Ok(TwoStreamSampler {
            s: SamplerState {
                labelled,
                unlabelled,
                labeled_bs,
                unlabeled_bs,
                rng: Pcg32::seed_from_u64(seed),
                epoch: 0,
                perm_l: vec![],
                batch_in_epoch: 0,
                perm_u: vec![],
                pos_u: 0,
            },
        })
    }

    /// Batches per epoch: `len(labelled) // labeled_bs`.
    pub fn batches_per_epoch(&self) -> usize {
        self.s.labelled.len() / self.s.labeled_bs
    }

    /// Completed epochs (an epoch in progress counts once finished).
    pub fn epoch(&self) -> u64 {
        self.s.epoch
    }

    /// The next batch: labelled indices first, then unlabelled.
    pub fn next_batch(&mut self) -> Vec<usize> {
        let s = &mut self.s;
        if s.perm_l.is_empty() {
            // New epoch: the reference draws the labelled permutation when the epoch's
            // iterator is created, and restarts the unlabelled chain.
            s.perm_l = permutation(&s.labelled, &mut s.rng);
            s.batch_in_epoch = 0;
            s.perm_u.clear();
            s.pos_u = 0;
        }
        let start = s.batch_in_epoch * s.labeled_bs;
        let mut batch = s.perm_l[start..start + s.labeled_bs].to_vec();
        for _ in 0..s.unlabeled_bs {
            if s.pos_u >= s.perm_u.len() {
                s.perm_u = permutation(&s.unlabelled, &mut s.rng);
                s.pos_u = 0;
            }
            batch.push(s.perm_u[s.pos_u]);
            s.pos_u += 1;
        }
        s.batch_in_epoch += 1;
        if s.batch_in_epoch == s.labelled.len() / s.labeled_bs {
            s.perm_l.clear();
            s.batch_in_epoch = 0;
            s.epoch += 1;
        }
        batch
    }

    pub fn state(&self) -> &SamplerState {
        &self.s
    }

    pub fn from_state(s: SamplerState) -> Result<Self> {
        let ok = s.labeled_bs >= 1
            && s.labeled_bs <= s.labelled.len()
            && s.unlabeled_bs >= 1
            && s.unlabeled_bs <= s.unlabelled.len()
            && (s.perm_l.is_empty()
                || (s.perm_l.len() == s.labelled.len()
                    && (s.batch_in_epoch + 1) * s.labeled_bs <= s.perm_l.len()))
            && s.pos_u <= s.perm_u.len();
        if !ok {
            return Err(Error::msg(
                "sampler state in the checkpoint is inconsistent",
            ));
        }
        Ok(TwoStreamSampler { s })
    }
}
