//! A network scored on a run's validation cases, as the references validate.
//!
//! Each case is predicted whole ([`predict_case`]: LA sliding window at the run's window and
//! strides, foreground where the averaged probability exceeds 0.5, no connected-component
//! step; ACDC slice-wise, zoomed to the run's patch and back, nearest), then per
//! foreground class: Dice, 0 when the class is absent from the prediction (SS-Net's and
//! AD-MT's `val_3D.py` / `val_2D.py`). The score is the mean over classes of the per-class
//! means over cases.
//!
//! AD-MT's ACDC validation (`val_2D.py`) also computes each class's HD95 (medpy, voxels,
//! on the whole volume), 0 when the class is absent from the prediction; where the class
//! is predicted but absent from the ground truth medpy raises (the reference would stop),
//! here it is NaN (`null` in `val.jsonl`).

use super::config::TrainConfig;
use super::predict::{predict_case, write_case_png};
use crate::data::dataset::Case;
use crate::error::Result;
use crate::metrics;
use crate::nn::Model;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One network's validation scores.
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    /// Mean over foreground classes of `class_dice`.
    pub dice: f64,
    /// Per foreground class, mean over cases.
    pub class_dice: Vec<f64>,
    /// Per foreground class, mean HD95 over cases (voxels), when asked for.
    pub class_hd95: Option<Vec<f64>>,
}

/// Score `model` on `cases` (module docs); `hd95`: also each class's HD95. `snapshot`:
/// write the PNG panel of the first case's prediction there.
pub fn score(
    model: &Model,
    cfg: &TrainConfig,
    cases: &[Case],
    hd95: bool,
    snapshot: Option<&Path>,
) -> Result<Scores> {
    let nc = cfg.num_classes();
    let mut sums = vec![0f64; nc - 1];
    let mut hd = vec![0f64; nc - 1];
    for (i, case) in cases.iter().enumerate() {
        let pred = predict_case(model, cfg, case)?;
        for c in 0..nc - 1 {
            let p = metrics::class_mask(&pred, c as u8 + 1);
            let g = metrics::class_mask(&case.label, c as u8 + 1);
            let predicted = p.iter().any(|&v| v);
            sums[c] += if predicted {
                metrics::dice(&p, &g)?
            } else {
                0.0
            };
            if hd95 && predicted {
                hd[c] += if g.iter().any(|&v| v) {
                    metrics::hd95(&p, &g, &case.shape, None)?
                } else {
                    f64::NAN
                };
            }
        }
        if let (0, Some(path)) = (i, snapshot) {
            write_case_png(path, case, &pred, cfg.dataset)?;
        }
    }
    let n = cases.len() as f64;
    let class_dice: Vec<f64> = sums.iter().map(|s| s / n).collect();
    let dice = class_dice.iter().sum::<f64>() / class_dice.len() as f64;
    Ok(Scores {
        dice,
        class_dice,
        class_hd95: hd95.then(|| hd.iter().map(|s| s / n).collect()),
    })
}

/// The best validation of a network so far: its score as kept for comparison and the
/// iteration.
pub type Best = Option<(f64, u64)>;

/// AD-MT's teachers' bests (the student's is the run's best), kept in the run state for
/// resume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TeacherBests {
    pub teacher1: Best,
    pub teacher2: Best,
}

/// A teacher's line of a validation in `val.jsonl`.
#[derive(Clone, Debug, Serialize)]
pub struct TeacherLine {
    pub dice: f64,
    pub class_dice: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_hd95: Option<Vec<f64>>,
    pub best_dice: f64,
    pub best_iter: u64,
}

impl TeacherLine {
    pub fn new(s: &Scores, best: Best) -> TeacherLine {
        let (best_dice, best_iter) = best.unwrap_or((0.0, 0));
        TeacherLine {
            dice: s.dice,
            class_dice: s.class_dice.clone(),
            class_hd95: s.class_hd95.clone(),
            best_dice,
            best_iter,
        }
    }
}

/// Whether `dice` beats `best` (strictly, from 0, as the references).
pub fn improves(dice: f64, best: Best) -> bool {
    dice > best.map_or(0.0, |b| b.0)
}
