//! The split of a run: which cases are labelled, unlabelled and validation, chosen once by
//! the seed and written to `<run>/splits.json` (a resumed run reads it back, so it trains on
//! exactly the same cases).
//!
//! - validation: the ids of `--val-cases FILE` (labelled cases, one per line), else a seeded
//!   `--val-fraction` of the labelled cases (default 0.2, at least 1; 0 turns validation off);
//! - labelled: of the labelled cases left, `--labelnum N` chosen by the seed (all by default);
//!   the others join the unlabelled stream (the semi-supervised benchmark protocol);
//! - unlabelled: every training image without a label, plus those.

use super::OwnDataset;
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_pcg::Pcg32;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name of the split in the run folder.
pub const SPLITS_FILE: &str = "splits.json";

/// How to split (the CLI flags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitOptions {
    /// Labelled cases kept for training (`None`: every labelled case not in validation).
    pub labelnum: Option<usize>,
    /// Fraction of the labelled cases held out for validation.
    pub val_fraction: f64,
    /// A list file of validation case ids (overrides `val_fraction`).
    pub val_cases: Option<PathBuf>,
    pub seed: u64,
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            labelnum: None,
            val_fraction: 0.2,
            val_cases: None,
            seed: 1337,
        }
    }
}

/// The case ids of each stream, sorted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub labelled: Vec<String>,
    pub unlabelled: Vec<String>,
    pub validation: Vec<String>,
}

impl Split {
    /// Split the cases of `ds` (module docs). A one-line error for: no labelled case, more
    /// `labelnum` than labelled cases left, an unknown or unlabelled validation case.
    pub fn choose(ds: &OwnDataset, o: &SplitOptions) -> Result<Split> {
        let labelled: Vec<String> = ds.labelled().map(|c| c.id.clone()).collect();
        let mut unlabelled: Vec<String> = ds
            .cases
            .iter()
            .filter(|c| c.label.is_none())
            .map(|c| c.id.clone())
            .collect();
        if labelled.is_empty() {
            return Err(Error::file(
                &ds.root,
                format!(
                    "no labelled case ({} images, none with a label file): add label maps ({})",
                    ds.cases.len(),
                    match ds.kind {
                        super::LayoutKind::Plain => "labels/<case>.nii.gz",
                        _ => "labelsTr/<case>.nii.gz",
                    }
                ),
            ));
        }
        let mut rng = Pcg32::seed_from_u64(o.seed ^ 0x5EED_5B17);
        let validation: Vec<String> = match &o.val_cases {
            Some(list) => {
                let ids = crate::data::dataset::read_list(list)?;
                for id in &ids {
                    if !labelled.contains(id) {
                        return Err(Error::file(
                            list,
                            format!(
                                "validation case '{id}' is not a labelled case of {}",
                                ds.root.display()
                            ),
                        ));
                    }
                }
                ids
            }
            None => {
                if !(0.0..1.0).contains(&o.val_fraction) {
                    return Err(Error::config(format!(
                        "--val-fraction {} is out of range [0, 1)",
                        o.val_fraction
                    )));
                }
                let n = if o.val_fraction == 0.0 {
                    0
                } else {
                    ((labelled.len() as f64 * o.val_fraction).round() as usize).max(1)
                };
                let mut shuffled = labelled.clone();
                shuffled.shuffle(&mut rng);
                shuffled.truncate(n);
                shuffled
            }
        };
        let mut left: Vec<String> = labelled
            .iter()
            .filter(|id| !validation.contains(id))
            .cloned()
            .collect();
        if left.is_empty() {
            return Err(Error::file(
                &ds.root,
                format!(
                    "{} labelled case(s), all held out for validation: add labelled cases or lower --val-fraction (0 turns validation off)",
                    labelled.len()
                ),
            ));
        }
        let keep = match o.labelnum {
            None => left.len(),
            Some(0) => return Err(Error::config("--labelnum 0: at least one labelled case is needed")),
            Some(n) if n > left.len() => {
                return Err(Error::file(
                    &ds.root,
                    format!(
                        "--labelnum {n} but only {} labelled case(s) are left after {} for validation: lower --labelnum or --val-fraction",
                        left.len(),
                        validation.len()
                    ),
                ))
            }
            Some(n) => n,
        };
        left.shuffle(&mut rng);
        unlabelled.extend(left.drain(keep..));
        if unlabelled.is_empty() {
            return Err(Error::file(
                &ds.root,
                format!(
                    "no unlabelled case: SS-Net trains on labelled and unlabelled scans; add images without labels ({}/ or --unlabelled DIR) or keep fewer labelled ones with --labelnum N (at most {})",
                    super::UNLABELLED_DIR,
                    left.len().saturating_sub(1).max(1)
                ),
            ));
        }
        left.sort();
        unlabelled.sort();
        let mut validation = validation;
        validation.sort();
        Ok(Split {
            labelled: left,
            unlabelled,
            validation,
        })
    }

    /// Write `dir/splits.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let p = dir.join(SPLITS_FILE);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::file(&p, format!("cannot serialise the split: {e}")))?;
        std::fs::write(&p, text + "\n").map_err(|e| Error::file(&p, format!("cannot write: {e}")))
    }

    /// Read `dir/splits.json` and check that every case is still in `ds`.
    pub fn read(dir: &Path, ds: &OwnDataset) -> Result<Split> {
        let p = dir.join(SPLITS_FILE);
        let text = std::fs::read_to_string(&p)
            .map_err(|e| Error::file(&p, format!("cannot read the run's split: {e}")))?;
        let s: Split = serde_json::from_str(&text)
            .map_err(|e| Error::file(&p, format!("not a split file: {e}")))?;
        for id in s.labelled.iter().chain(&s.validation) {
            if ds.case(id).is_none_or(|c| c.label.is_none()) {
                return Err(Error::file(
                    &p,
                    format!(
                        "labelled case '{id}' is no longer a labelled case of {}",
                        ds.root.display()
                    ),
                ));
            }
        }
        for id in &s.unlabelled {
            if ds.case(id).is_none() {
                return Err(Error::file(
                    &p,
                    format!("case '{id}' is no longer in {}", ds.root.display()),
                ));
            }
        }
        Ok(s)
    }
}
