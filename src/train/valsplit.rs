//! Which cases validate a run on the LA or ACDC layout: `val_split` (`--val-split`).
//!
//! | value | validation cases | held out of training |
//! |---|---|---|
//! | (absent) | LA `test.list`, ACDC `splits/val.list`: what the references do | none |
//! | `test` | the test list (LA `test.list`, ACDC `splits/test.list`) | none |
//! | `val` | the validation list (ACDC `splits/val.list`; LA `val.list` beside `train.list`) | those of its cases that are in the training list |
//! | `holdout:N` | LA: the last N scans of `train.list` | those N |
//! | a file | the case ids it lists, one per line (as `train.list`) | those of its cases that are in the training list |
//!
//! The reference validates LA on its test list, so its best checkpoint is selected on the
//! cases it is then tested on; `holdout:N` (or a `val.list`, or a list file) validates on
//! cases that are neither trained on nor tested on. A validation case may not be one of the
//! labelled training cases (the first `labelnum` of the list): the labelled set stays the
//! reference's. Held-out cases leave the unlabelled stream.
//!
//! A run given `val_split` writes what it chose to `splits.json` beside its checkpoints
//! ([`RunSplit`]: the training items of each stream in order and the validation cases); a
//! resumed run reads it back (and refuses a changed `val_split`), so it trains and
//! validates on exactly the same cases even if the list files changed. Without `val_split`
//! nothing is written: the run is the reference's, as before.

use super::config::DatasetKind;
use super::data::labelled_slices;
use crate::data::dataset::{parse_slice_name, read_list, AcdcDataset, LaDataset};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The file a run's split is written to, beside its checkpoints.
pub const RUN_SPLITS: &str = "splits.json";
/// How errors name the setting.
pub const OPTION: &str = "--val-split (val_split)";
/// What the setting accepts, for error messages.
const ACCEPTS: &str = "give test, val, holdout:N (LA: the last N scans of train.list, held out of training) or a list file of case ids";

/// A parsed `val_split`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValSplit {
    /// The layout's test list.
    Test,
    /// The layout's validation list (LA: `val.list` beside `train.list`).
    Val,
    /// LA: the last N scans of `train.list`, held out of training.
    Holdout(usize),
    /// The case ids of a list file.
    List(PathBuf),
}

impl ValSplit {
    /// Parse a value (syntax only; a list file is read when the split is chosen).
    pub fn parse(v: &str) -> Result<ValSplit> {
        let t = v.trim();
        let bad = |why: &str| Err(Error::config(format!("{OPTION} = {v:?}: {why}; {ACCEPTS}")));
        match t {
            "" => bad("empty"),
            "test" => Ok(ValSplit::Test),
            "val" => Ok(ValSplit::Val),
            _ => match t.strip_prefix("holdout:") {
                Some(n) => match n.trim().parse::<usize>() {
                    Ok(n) if n > 0 => Ok(ValSplit::Holdout(n)),
                    _ => bad("holdout takes a number of scans of at least 1"),
                },
                None => Ok(ValSplit::List(PathBuf::from(t))),
            },
        }
    }

    /// Refuse what the dataset layout cannot do (one line naming the option and the fix).
    pub fn check_dataset(&self, kind: DatasetKind) -> Result<()> {
        if let (ValSplit::Holdout(n), DatasetKind::Acdc) = (self, kind) {
            return Err(Error::config(format!(
                "{OPTION} = \"holdout:{n}\" applies to LA (scans of train.list); ACDC has its validation list: use val (the default) or a list file of case ids"
            )));
        }
        Ok(())
    }

    /// The value as written in the configuration and in `splits.json`.
    pub fn name(&self) -> String {
        match self {
            ValSplit::Test => "test".into(),
            ValSplit::Val => "val".into(),
            ValSplit::Holdout(n) => format!("holdout:{n}"),
            ValSplit::List(p) => p.display().to_string(),
        }
    }
}

/// What a run trains and validates on, as chosen from `val_split` (written to
/// [`RUN_SPLITS`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSplit {
    /// The `val_split` it was chosen by.
    pub val_split: String,
    /// The training items of the labelled stream, in order: LA case ids, ACDC
    /// `train_slices.list` entries (`<case>_slice_<n>`).
    pub labelled: Vec<String>,
    /// The training items of the unlabelled stream, in order.
    pub unlabelled: Vec<String>,
    /// The validation cases (volumes), in order.
    pub validation: Vec<String>,
}

/// The case ids of a list file, checked: readable, not empty, no id twice.
fn read_ids(list: &Path) -> Result<Vec<String>> {
    if !list.is_file() {
        return Err(Error::config(format!(
            "{OPTION} = {:?}: no such list file; {ACCEPTS}",
            list.display().to_string()
        )));
    }
    let ids = read_list(list)?;
    if ids.is_empty() {
        return Err(Error::file(
            list,
            format!("{OPTION}: the list names no case; put one case id per line"),
        ));
    }
    let mut seen = HashSet::new();
    if let Some(d) = ids.iter().find(|id| !seen.insert(id.as_str())) {
        return Err(Error::file(
            list,
            format!("{OPTION}: case '{d}' is listed twice; list each case once"),
        ));
    }
    Ok(ids)
}

/// Refuse a validation case that is a labelled training case.
fn refuse_labelled(
    validation: &[String],
    labelled_cases: &HashSet<&str>,
    from: &Path,
    labelnum: usize,
    what: &str,
) -> Result<()> {
    if let Some(id) = validation
        .iter()
        .find(|id| labelled_cases.contains(id.as_str()))
    {
        return Err(Error::file(
            from,
            format!(
                "{OPTION}: case '{id}' is one of the {labelnum} labelled {what}: validate on other cases (unlabelled training cases are held out of training, other cases are fine)"
            ),
        ));
    }
    Ok(())
}

impl RunSplit {
    /// The split of an LA run: labelled = the first `labelnum` of `train.list`; validation
    /// by `vs`; the unlabelled stream = the rest of `train.list` without the validation
    /// cases.
    pub fn choose_la(ds: &LaDataset, labelnum: usize, vs: &ValSplit) -> Result<RunSplit> {
        let train_list = ds.root.join("train.list");
        let n = ds.train.len();
        let (validation, from): (Vec<String>, PathBuf) = match vs {
            ValSplit::Test => (ds.test.clone(), ds.root.join("test.list")),
            ValSplit::Val => {
                let p = ds.root.join("val.list");
                if !p.is_file() {
                    return Err(Error::file(
                        &p,
                        format!("{OPTION} = \"val\": not found (this LA folder has train.list and test.list only); use holdout:N to hold out the last N scans of train.list, or a list file of case ids"),
                    ));
                }
                (read_ids(&p)?, p)
            }
            ValSplit::Holdout(k) => {
                let most = n.saturating_sub(labelnum + 1);
                if *k > most {
                    return Err(Error::config(format!(
                        "{OPTION} = \"holdout:{k}\" is out of range: {} lists {n} scans, the first {labelnum} labelled, and at least one must stay unlabelled; hold out at most {most}",
                        train_list.display()
                    )));
                }
                (ds.train[n - k..].to_vec(), train_list.clone())
            }
            ValSplit::List(p) => (read_ids(p)?, p.clone()),
        };
        for id in &validation {
            if !ds.h5_path(id).is_file() {
                return Err(Error::file(
                    &from,
                    format!(
                        "{OPTION}: case '{id}' not found ({} does not exist)",
                        ds.h5_path(id).display()
                    ),
                ));
            }
        }
        let labelled = ds.train[..labelnum.min(n)].to_vec();
        let lab: HashSet<&str> = labelled.iter().map(String::as_str).collect();
        refuse_labelled(&validation, &lab, &from, labelnum, "scans")?;
        let held: HashSet<&str> = validation.iter().map(String::as_str).collect();
        let unlabelled = ds.train[labelled.len()..]
            .iter()
            .filter(|id| !held.contains(id.as_str()))
            .cloned()
            .collect();
        Ok(RunSplit {
            val_split: vs.name(),
            labelled,
            unlabelled,
            validation,
        })
    }

    /// The split of an ACDC run: labelled = the slices of the first `labelnum` patients of
    /// `train_slices.list`; validation by `vs`; the unlabelled stream = the other slices
    /// without those of the validation cases.
    pub fn choose_acdc(ds: &AcdcDataset, labelnum: usize, vs: &ValSplit) -> Result<RunSplit> {
        vs.check_dataset(DatasetKind::Acdc)?;
        let splits = ds.root.join("splits");
        let (validation, from): (Vec<String>, PathBuf) = match vs {
            ValSplit::Test => (ds.test.clone(), splits.join("test.list")),
            ValSplit::Val => (ds.val.clone(), splits.join("val.list")),
            ValSplit::Holdout(_) => (Vec::new(), splits.join("train_slices.list")), // refused above
            ValSplit::List(p) => (read_ids(p)?, p.clone()),
        };
        for id in &validation {
            if ds.paths(id).is_err() {
                return Err(Error::file(
                    &from,
                    format!("{OPTION}: case '{id}' not found (no {id}.nii.gz in train/, val/ or test/ of {})", ds.root.display()),
                ));
            }
        }
        let names: Vec<String> = ds
            .train_slices
            .iter()
            .map(|r| format!("{}_slice_{}", r.case, r.index + 1))
            .collect();
        let cases: Vec<&str> = ds.train_slices.iter().map(|r| r.case.as_str()).collect();
        let nl = labelled_slices(&cases, labelnum);
        let lab: HashSet<&str> = cases[..nl].iter().copied().collect();
        refuse_labelled(&validation, &lab, &from, labelnum, "patients' cases")?;
        let held: HashSet<&str> = validation.iter().map(String::as_str).collect();
        let unlabelled = names[nl..]
            .iter()
            .zip(&cases[nl..])
            .filter(|(_, c)| !held.contains(**c))
            .map(|(n, _)| n.clone())
            .collect();
        Ok(RunSplit {
            val_split: vs.name(),
            labelled: names[..nl].to_vec(),
            unlabelled,
            validation,
        })
    }

    /// The training items in sampler order: labelled, then unlabelled.
    pub fn training(&self) -> impl Iterator<Item = &String> {
        self.labelled.iter().chain(&self.unlabelled)
    }

    /// Apply a split to an LA dataset: its training list becomes the split's, each case
    /// checked to exist (`file` names the split in errors).
    pub fn apply_la(&self, ds: &mut LaDataset, file: &Path) -> Result<()> {
        for id in self.training().chain(&self.validation) {
            if !ds.h5_path(id).is_file() {
                return Err(Error::file(
                    file,
                    format!(
                        "case '{id}' of the run's split is gone ({} does not exist): restore it, or start a new run",
                        ds.h5_path(id).display()
                    ),
                ));
            }
        }
        ds.train = self.training().cloned().collect();
        Ok(())
    }

    /// Apply a split to an ACDC dataset: its training slices become the split's, each
    /// checked to name an existing case (the slice index is checked when the volumes are
    /// read).
    pub fn apply_acdc(&self, ds: &mut AcdcDataset, file: &Path) -> Result<()> {
        let mut slices = Vec::new();
        for name in self.training() {
            let r = parse_slice_name(name).ok_or_else(|| {
                Error::file(
                    file,
                    format!("'{name}' is not of the form <case>_slice_<n> (n ≥ 1)"),
                )
            })?;
            slices.push(r);
        }
        for case in slices
            .iter()
            .map(|r| r.case.as_str())
            .chain(self.validation.iter().map(String::as_str))
        {
            if ds.paths(case).is_err() {
                return Err(Error::file(
                    file,
                    format!(
                        "case '{case}' of the run's split is gone from {}: restore it, or start a new run",
                        ds.root.display()
                    ),
                ));
            }
        }
        ds.train_slices = slices;
        Ok(())
    }

    /// Write `dir/splits.json` (atomically).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let p = dir.join(RUN_SPLITS);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::file(&p, format!("cannot serialise the split: {e}")))?;
        crate::fsutil::atomic_write(&p, (text + "\n").as_bytes())
    }

    /// Read `dir/splits.json` of a run chosen by `val_split` (resume).
    pub fn read(dir: &Path, val_split: &str) -> Result<RunSplit> {
        let p = dir.join(RUN_SPLITS);
        let text = std::fs::read_to_string(&p).map_err(|e| {
            Error::file(
                &p,
                format!("cannot read the run's split ({e}): the run was started with {OPTION} = {val_split:?} and needs it to resume; restore the file or start a new run"),
            )
        })?;
        let s: RunSplit = serde_json::from_str(&text)
            .map_err(|e| Error::file(&p, format!("not a run split: {e}")))?;
        if s.val_split != val_split {
            return Err(Error::file(
                &p,
                format!(
                    "written for {OPTION} = {:?}, the run's configuration says {val_split:?}: restore the run's own files",
                    s.val_split
                ),
            ));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_bad_ones_name_the_option_and_the_fix() {
        assert_eq!(ValSplit::parse("test").unwrap(), ValSplit::Test);
        assert_eq!(ValSplit::parse(" val ").unwrap(), ValSplit::Val);
        assert_eq!(ValSplit::parse("holdout:8").unwrap(), ValSplit::Holdout(8));
        assert_eq!(
            ValSplit::parse("my/val.list").unwrap(),
            ValSplit::List("my/val.list".into())
        );
        for bad in ["holdout:0", "holdout:x", "holdout:", ""] {
            let e = ValSplit::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("--val-split") && e.contains("holdout:N") && !e.contains('\n'),
                "{e}"
            );
        }
        let e = ValSplit::Holdout(2)
            .check_dataset(DatasetKind::Acdc)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--val-split") && e.contains("use val"), "{e}");
        ValSplit::Holdout(2).check_dataset(DatasetKind::La).unwrap();
        for v in ["test", "val", "holdout:3", "a/b.list"] {
            assert_eq!(ValSplit::parse(v).unwrap().name(), v);
        }
    }
}
