//! The reference's `TwoStreamBatchSampler`: every batch is `labeled_bs` labelled indices
//! followed by `batch_size - labeled_bs` unlabelled ones (in that order here, whichever
//! stream drives the epochs).
//!
//! - An epoch is one pass over a fresh permutation of the PRIMARY stream, in chunks of its
//!   share of the batch: `len(primary) // share` batches (a remainder is dropped). SS-Net's
//!   primary stream is the labelled one (SS:code/train_ss_3d.py:87); AD-MT swaps the roles
//!   (ADMT.md §5: its epochs run over the unlabelled cases), [`Primary::Unlabelled`].
//! - The other stream is drawn from an endless chain of fresh permutations, in chunks that
//!   may straddle two permutations. As in the reference, where the PyTorch `DataLoader` calls
//!   the sampler's `__iter__` once per epoch, the chain restarts with a fresh permutation at
//!   every epoch (the rest of the previous one is dropped).
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

/// Which stream's permutation makes an epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Primary {
    /// SS-Net: epochs over the labelled cases.
    #[default]
    Labelled,
    /// AD-MT: epochs over the unlabelled cases.
    Unlabelled,
}

/// Everything the sampler needs to continue exactly where it was. (The serialised names of
/// the permutations are those of the labelled-primary sampler, which came first.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplerState {
    pub labelled: Vec<usize>,
    pub unlabelled: Vec<usize>,
    pub labeled_bs: usize,
    pub unlabeled_bs: usize,
    #[serde(default, skip_serializing_if = "is_labelled")]
    pub primary: Primary,
    pub rng: Pcg32,
    /// Completed epochs.
    pub epoch: u64,
    /// This epoch's permutation of the primary stream and the number of batches already taken
    /// from it (empty permutation: the next batch starts a new epoch).
    #[serde(rename = "perm_l")]
    pub perm_primary: Vec<usize>,
    pub batch_in_epoch: usize,
    /// The current permutation of the other stream and the position in it.
    #[serde(rename = "perm_u")]
    pub perm_other: Vec<usize>,
    #[serde(rename = "pos_u")]
    pub pos_other: usize,
}

fn is_labelled(p: &Primary) -> bool {
    *p == Primary::Labelled
}

impl SamplerState {
    /// (primary items, their share of a batch, other items, their share).
    fn streams(&self) -> (&[usize], usize, &[usize], usize) {
        match self.primary {
            Primary::Labelled => (
                &self.labelled,
                self.labeled_bs,
                &self.unlabelled,
                self.unlabeled_bs,
            ),
            Primary::Unlabelled => (
                &self.unlabelled,
                self.unlabeled_bs,
                &self.labelled,
                self.labeled_bs,
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TwoStreamSampler {
    s: SamplerState,
}

impl TwoStreamSampler {
    /// SS-Net's sampler (epochs over the labelled stream). Errors (one line) when a stream is
    /// smaller than its share of the batch.
    pub fn new(
        labelled: Vec<usize>,
        unlabelled: Vec<usize>,
        labeled_bs: usize,
        unlabeled_bs: usize,
        seed: u64,
    ) -> Result<Self> {
        Self::with_primary(
            labelled,
            unlabelled,
            labeled_bs,
            unlabeled_bs,
            Primary::Labelled,
            seed,
        )
    }

    /// The sampler with `primary` driving the epochs.
    pub fn with_primary(
        labelled: Vec<usize>,
        unlabelled: Vec<usize>,
        labeled_bs: usize,
        unlabeled_bs: usize,
        primary: Primary,
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
                primary,
                rng: Pcg32::seed_from_u64(seed),
                epoch: 0,
                perm_primary: vec![],
                batch_in_epoch: 0,
                perm_other: vec![],
                pos_other: 0,
            },
        })
    }

    /// Batches per epoch: `len(primary) // its share of the batch`.
    pub fn batches_per_epoch(&self) -> usize {
        let (p, p_bs, _, _) = self.s.streams();
        p.len() / p_bs
    }

    /// Completed epochs (an epoch in progress counts once finished).
    pub fn epoch(&self) -> u64 {
        self.s.epoch
    }

    /// The next batch: labelled indices first, then unlabelled.
    pub fn next_batch(&mut self) -> Vec<usize> {
        let per_epoch = self.batches_per_epoch();
        let s = &mut self.s;
        let (primary, p_bs, other, o_bs) = match s.primary {
            Primary::Labelled => (&s.labelled, s.labeled_bs, &s.unlabelled, s.unlabeled_bs),
            Primary::Unlabelled => (&s.unlabelled, s.unlabeled_bs, &s.labelled, s.labeled_bs),
        };
        if s.perm_primary.is_empty() {
            // New epoch: the reference draws the primary permutation when the epoch's
            // iterator is created, and restarts the other chain.
            s.perm_primary = permutation(primary, &mut s.rng);
            s.batch_in_epoch = 0;
            s.perm_other.clear();
            s.pos_other = 0;
        }
        let start = s.batch_in_epoch * p_bs;
        let from_primary = s.perm_primary[start..start + p_bs].to_vec();
        let mut from_other = Vec::with_capacity(o_bs);
        for _ in 0..o_bs {
            if s.pos_other >= s.perm_other.len() {
                s.perm_other = permutation(other, &mut s.rng);
                s.pos_other = 0;
            }
            from_other.push(s.perm_other[s.pos_other]);
            s.pos_other += 1;
        }
        s.batch_in_epoch += 1;
        if s.batch_in_epoch == per_epoch {
            s.perm_primary.clear();
            s.batch_in_epoch = 0;
            s.epoch += 1;
        }
        match s.primary {
            Primary::Labelled => [from_primary, from_other].concat(),
            Primary::Unlabelled => [from_other, from_primary].concat(),
        }
    }

    pub fn state(&self) -> &SamplerState {
        &self.s
    }

    pub fn from_state(s: SamplerState) -> Result<Self> {
        let (primary, p_bs, _, _) = s.streams();
        let ok = s.labeled_bs >= 1
            && s.labeled_bs <= s.labelled.len()
            && s.unlabeled_bs >= 1
            && s.unlabeled_bs <= s.unlabelled.len()
            && (s.perm_primary.is_empty()
                || (s.perm_primary.len() == primary.len()
                    && (s.batch_in_epoch + 1) * p_bs <= s.perm_primary.len()))
            && s.pos_other <= s.perm_other.len();
        if !ok {
            return Err(Error::msg(
                "sampler state in the checkpoint is inconsistent",
            ));
        }
        Ok(TwoStreamSampler { s })
    }
}
