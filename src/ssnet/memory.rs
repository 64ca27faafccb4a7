//! The prototype memory: up to 32 projected features per class, rebuilt every iteration from
//! the correctly predicted foreground voxels of the labelled samples.
//!
//! For each class c with at least one row: more than 32 rows are ranked by
//! `sigmoid(selector_c(rows))` (selector in train mode: its BatchNorm statistics move) and the
//! FIRST 32 of an ascending sort are kept — the reference keeps the lowest scores although its
//! comment says highest; [`MemoryOrder::Descending`] keeps the highest instead. A class with
//! no row keeps its previous entry. The ranking reads the scores back (the one sync of the
//! step besides the loss readout).

use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::nn::Model;
use crate::ops::{self, BnMode};
use crate::tensor::{DType, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryOrder {
    /// The reference's behaviour: keep the 32 lowest-scored features.
    Ascending,
    /// What the reference's comment intends: keep the 32 highest-scored features.
    Descending,
}

pub struct PrototypeMemory {
    pub per_class: usize,
    pub order: MemoryOrder,
    /// Per class: [rows ≤ per_class, 32], or None when never set.
    pub entries: Vec<Option<Tensor>>,
    /// Keep each class's last ranking in [`PrototypeMemory::rankings`] (off by default: the
    /// candidates of a class can be millions of rows; the golden tests turn it on to say which
    /// near-equal scores decided a memory).
    pub keep_rankings: bool,
    /// Per class, when `keep_rankings`: the candidate rows `[n, 32]`, their scores and the
    /// indices kept, of the last update that ranked (None where every candidate was kept).
    pub rankings: Vec<Option<Ranking>>,
}

/// One class's ranking (see [`PrototypeMemory::keep_rankings`]).
pub struct Ranking {
    pub candidates: Tensor,
    pub scores: Vec<f32>,
    pub kept: Vec<u32>,
}

impl PrototypeMemory {
    pub fn new(num_classes: usize, per_class: usize, order: MemoryOrder) -> Self {
        PrototypeMemory {
            per_class,
            order,
            entries: vec![None; num_classes],
            keep_rankings: false,
            rankings: (0..num_classes).map(|_| None).collect(),
        }
    }

    /// Rows of entry c (0 when unset).
    pub fn rows(&self, c: usize) -> usize {
        self.entries
            .get(c)
            .and_then(|e| e.as_ref())
            .map_or(0, |t| t.shape()[0])
    }

    /// Update from projected features `[K, 32]` and their u32 labels `[K]`.
    pub fn update(&mut self, model: &Model, feats: &Tensor, labels: &Tensor) -> Result<()> {
        if feats.shape().len() != 2 || labels.numel() != feats.shape()[0] {
            return Err(Error::op(
                "memory update",
                format!(
                    "features {:?} with labels {:?}",
                    feats.shape(),
                    labels.shape()
                ),
            ));
        }
        if feats.shape()[0] == 0 {
            return Ok(());
        }
        no_grad(|| {
            for c in 0..self.entries.len() {
                let mask = ops::eq_value(labels, c as u32)?;
                let (rows, _, count) = ops::masked_rows(feats, &mask)?;
                if count == 0 {
                    continue;
                }
                self.rankings[c] = None;
                if count <= self.per_class {
                    self.entries[c] = Some(rows);
                    continue;
                }
                let scores =
                    ops::sigmoid(&model.selector(c, false, &rows, BnMode::Train)?)?.to_f32()?;
                let keep = select_indices(&scores, self.per_class, self.order);
                let idx = Tensor::from_u32(feats.gpu(), &keep, &[keep.len()])?;
                self.entries[c] = Some(ops::gather_rows(&rows, &idx, keep.len())?);
                if self.keep_rankings {
                    self.rankings[c] = Some(Ranking {
                        candidates: rows,
                        scores,
                        kept: keep,
                    });
                }
            }
            Ok(())
        })
    }
}

/// The indices kept: the first `k` of a stable ascending (or descending) sort of `scores`.
pub fn select_indices(scores: &[f32], k: usize, order: MemoryOrder) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..scores.len() as u32).collect();
    match order {
        MemoryOrder::Ascending => {
            idx.sort_by(|&a, &b| scores[a as usize].total_cmp(&scores[b as usize]))
        }
        MemoryOrder::Descending => {
            idx.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]))
        }
    }
    idx.truncate(k);
    idx
}

/// u32 labels of the selected rows: `gather_rows` on a [K, 1] view of the label map.
pub fn gather_labels(labels: &Tensor, idx: &Tensor, count: usize) -> Result<Tensor> {
    labels.expect_dtype("gather_labels", DType::U32)?;
    let col = labels.reshape(&[labels.numel(), 1])?;
    ops::gather_rows(&col, idx, count)?.reshape(&[count])
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn selection_keeps_lowest_or_highest_in_stable_order() {
        let s = [0.5, 0.1, 0.9, 0.1, 0.7];
        assert_eq!(select_indices(&s, 3, MemoryOrder::Ascending), vec![1, 3, 0]);
        assert_eq!(select_indices(&s, 2, MemoryOrder::Descending), vec![2, 4]);
    }
}
