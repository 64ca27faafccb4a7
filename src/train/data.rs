//! The training set as the sampler sees it (indices `0..len`, the first `labelled` of them
//! labelled), batches of augmented samples, and the validation / test cases.
//!
//! - LA: items are the cases of `train.list` in order; the first `labelnum` are labelled (the
//!   reference's `labeled_idxs = range(labelnum)`, the rest of the list unlabelled).
//! - ACDC: items are the entries of `train_slices.list` in order (`<case>_slice_n` = slice
//!   `n - 1` of the train volume); the labelled ones are the slices of the first `labelnum`
//!   patients of that list, which gives the reference's table (3 → 68, 7 → 136, ...).
//!
//! Volumes are read on first use and kept (every file is validated when read: a NaN voxel is
//! a one-line error naming the file). [`TrainSet::from_items`] builds a set from arrays in
//! memory, bypassing the files (tests).

use super::augment;
use super::config::{DatasetKind, TrainConfig};
use super::valsplit::{RunSplit, ValSplit};
use crate::data::dataset::{AcdcDataset, Case, LaDataset, Split};
use crate::data::nifti;
use crate::error::{Error, Result};
use rand_pcg::Pcg32;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// One unaugmented training item: LA `[X, Y, Z]`, ACDC `[H, W]`.
#[derive(Clone, Debug)]
pub struct Item {
    pub image: Vec<f32>,
    pub label: Vec<u8>,
    pub shape: Vec<usize>,
}

enum Source {
    La(LaDataset),
    Acdc(AcdcDataset),
    Memory(Vec<Item>),
}

/// A batch ready for the GPU: `x` `[B, 1, spatial...]`, `labels` (u32) of the first
/// `labeled_bs` samples `[L, spatial...]`, and the unaugmented-order indices.
pub struct Batch {
    pub x: Vec<f32>,
    pub x_shape: Vec<usize>,
    pub labels: Vec<u32>,
    pub label_shape: Vec<usize>,
    /// The augmented labels of every sample (snapshots).
    pub all_labels: Vec<u8>,
}

pub struct TrainSet {
    pub kind: DatasetKind,
    source: Source,
    /// Number of items.
    pub len: usize,
    /// Items `0..labelled` are labelled.
    pub labelled: usize,
    /// What the labelled items are, for messages ("4 of 12 scans", "68 slices of 3 patients").
    pub describe: String,
    /// The split `val_split` chose (its training items are this set's), when one was given.
    pub split: Option<RunSplit>,
    cache: HashMap<String, Arc<Case>>,
}

/// The patient of an ACDC case name (`patient099_frame01` → `patient099`).
pub fn patient_of(case: &str) -> &str {
    case.split('_').next().unwrap_or(case)
}

/// Number of leading entries of `cases` that belong to the first `patients` distinct patients.
pub fn labelled_slices(cases: &[&str], patients: usize) -> usize {
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let p = patient_of(c);
        if !seen.contains(&p) {
            if seen.len() == patients {
                return i;
            }
            seen.push(p);
        }
    }
    cases.len()
}

impl TrainSet {
    /// Open the dataset of `cfg` (lists checked; volumes read lazily). With `val_split`,
    /// the split is chosen now ([`RunSplit::choose_la`] / [`RunSplit::choose_acdc`]): its
    /// validation cases leave the training streams.
    pub fn open(cfg: &TrainConfig) -> Result<TrainSet> {
        Self::open_with(cfg, None)
    }

    /// [`TrainSet::open`] with the split a run wrote (`saved`: resume), which then gives the
    /// training items instead of the lists; `file` names it in errors.
    pub fn open_with(cfg: &TrainConfig, saved: Option<(RunSplit, &Path)>) -> Result<TrainSet> {
        if cfg.own.is_some() {
            return Ok(super::own::open_run(cfg)?.0);
        }
        if !cfg.data.is_dir() {
            return Err(Error::file(
                &cfg.data,
                format!(
                    "{} dataset folder not found: pass --data DIR (or set `data` in the config)",
                    cfg.dataset.name()
                ),
            ));
        }
        match cfg.dataset {
            DatasetKind::La => {
                let mut ds = LaDataset::open(&cfg.data)?;
                let n = ds.train.len();
                if cfg.labelnum >= n {
                    return Err(Error::config(format!(
                        "labelnum = {} is out of range: {} lists {n} scans and some must stay unlabelled",
                        cfg.labelnum,
                        cfg.data.join("train.list").display()
                    )));
                }
                let split = match (saved, &cfg.val_split) {
                    (Some((s, file)), _) => {
                        check_labelled(&s, cfg.labelnum, file)?;
                        s.apply_la(&mut ds, file)?;
                        Some(s)
                    }
                    (None, Some(v)) => {
                        let s = RunSplit::choose_la(&ds, cfg.labelnum, &ValSplit::parse(v)?)?;
                        ds.train = s.training().cloned().collect();
                        Some(s)
                    }
                    (None, None) => None,
                };
                let len = ds.train.len();
                Ok(TrainSet {
                    kind: cfg.dataset,
                    len,
                    labelled: cfg.labelnum,
                    describe: format!("{} of {len} scans", cfg.labelnum),
                    source: Source::La(ds),
                    split,
                    cache: HashMap::new(),
                })
            }
            DatasetKind::Acdc => {
                let mut ds = AcdcDataset::open(&cfg.data)?;
                if ds.train_slices.is_empty() {
                    return Err(Error::file(
                        cfg.data.join("splits/train_slices.list"),
                        "no training slices (missing or empty list)",
                    ));
                }
                let names: Vec<&str> = ds.train_slices.iter().map(|r| r.case.as_str()).collect();
                let mut patients: Vec<&str> = names.iter().map(|c| patient_of(c)).collect();
                patients.dedup();
                patients.sort();
                patients.dedup();
                if cfg.labelnum >= patients.len() {
                    return Err(Error::config(format!(
                        "labelnum = {} is out of range: train_slices.list has {} patients and some must stay unlabelled",
                        cfg.labelnum,
                        patients.len()
                    )));
                }
                let mut labelled = labelled_slices(&names, cfg.labelnum);
                let patients = patients.len();
                let split = match (saved, &cfg.val_split) {
                    (Some((s, file)), _) => {
                        s.apply_acdc(&mut ds, file)?;
                        labelled = s.labelled.len();
                        Some(s)
                    }
                    (None, Some(v)) => {
                        let s = RunSplit::choose_acdc(&ds, cfg.labelnum, &ValSplit::parse(v)?)?;
                        s.apply_acdc(&mut ds, &cfg.data)?;
                        Some(s)
                    }
                    (None, None) => None,
                };
                let len = ds.train_slices.len();
                Ok(TrainSet {
                    kind: cfg.dataset,
                    len,
                    labelled,
                    describe: format!(
                        "{labelled} of {len} slices ({} of {patients} patients)",
                        cfg.labelnum
                    ),
                    source: Source::Acdc(ds),
                    split,
                    cache: HashMap::new(),
                })
            }
        }
    }

    /// A set from arrays in memory (no file, no validation): the first `labelled` items are
    /// labelled. Items are `[X, Y, Z]` (LA) or `[H, W]` (ACDC).
    pub fn from_items(kind: DatasetKind, items: Vec<Item>, labelled: usize) -> Result<TrainSet> {
        for (i, it) in items.iter().enumerate() {
            if it.shape.len() != kind.dims()
                || it.shape.iter().product::<usize>() != it.image.len()
                || it.image.len() != it.label.len()
            {
                return Err(Error::msg(format!(
                    "item {i}: shape {:?} does not fit {} voxels",
                    it.shape,
                    it.image.len()
                )));
            }
        }
        Ok(TrainSet {
            kind,
            len: items.len(),
            labelled,
            describe: format!("{labelled} of {} items", items.len()),
            source: Source::Memory(items),
            split: None,
            cache: HashMap::new(),
        })
    }

    fn case(&mut self, id: &str) -> Result<Arc<Case>> {
        if let Some(c) = self.cache.get(id) {
            return Ok(c.clone());
        }
        let c = Arc::new(match &self.source {
            Source::La(ds) => ds.load(id)?,
            Source::Acdc(ds) => ds.load(id)?,
            Source::Memory(_) => return Err(Error::msg("in-memory set has no cases")),
        });
        self.cache.insert(id.to_string(), c.clone());
        Ok(c)
    }

    /// Read and check every training volume now (each file validated, an ACDC slice index
    /// within its volume, image and label in the same space unless `ignore_affine`), so
    /// that a bad file stops the run before anything is written to the run folder.
    /// Volumes stay cached for training.
    pub fn preload(&mut self, ignore_affine: bool) -> Result<()> {
        let refs: Vec<(String, Option<usize>)> = match &self.source {
            Source::Memory(_) => return Ok(()),
            Source::La(ds) => ds.train.iter().map(|id| (id.clone(), None)).collect(),
            Source::Acdc(ds) => ds
                .train_slices
                .iter()
                .map(|r| (r.case.clone(), Some(r.index)))
                .collect(),
        };
        for (id, slice) in refs {
            let fresh = !self.cache.contains_key(&id);
            let c = self.case(&id)?;
            if let Some(k) = slice {
                if k >= c.shape[0] {
                    return Err(Error::file(
                        &c.image_path,
                        format!(
                            "train_slices.list names slice {} of '{id}', the volume has {}",
                            k + 1,
                            c.shape[0]
                        ),
                    ));
                }
            }
            if fresh && c.image_path != c.label_path {
                check_affines(&c.image_path, &c.label_path, ignore_affine)?;
            }
        }
        Ok(())
    }

    /// Item `i`, unaugmented.
    pub fn item(&mut self, i: usize) -> Result<Item> {
        match &self.source {
            Source::Memory(items) => items
                .get(i)
                .cloned()
                .ok_or_else(|| Error::msg(format!("item {i} out of range"))),
            Source::La(ds) => {
                let id = ds.train[i].clone();
                let c = self.case(&id)?;
                Ok(Item {
                    image: c.image.clone(),
                    label: c.label.clone(),
                    shape: c.shape.to_vec(),
                })
            }
            Source::Acdc(ds) => {
                let r = ds.train_slices[i].clone();
                let c = self.case(&r.case)?;
                let s = c.slice(r.index)?;
                Ok(Item {
                    image: s.image,
                    label: s.label,
                    shape: s.shape.to_vec(),
                })
            }
        }
    }

    /// Augment the items `idx` (in order, drawing from `rng`) into a batch of `patch`.
    pub fn batch(
        &mut self,
        idx: &[usize],
        labeled_bs: usize,
        patch: &[usize],
        rng: &mut Pcg32,
    ) -> Result<Batch> {
        let per: usize = patch.iter().product();
        let mut x = Vec::with_capacity(idx.len() * per);
        let mut all_labels = Vec::with_capacity(idx.len() * per);
        for &i in idx {
            let it = self.item(i)?;
            let (img, lab) = match self.kind {
                DatasetKind::La => augment::la_sample(
                    &it.image,
                    &it.label,
                    [it.shape[0], it.shape[1], it.shape[2]],
                    [patch[0], patch[1], patch[2]],
                    rng,
                ),
                DatasetKind::Acdc => augment::acdc_sample(
                    &it.image,
                    &it.label,
                    [it.shape[0], it.shape[1]],
                    [patch[0], patch[1]],
                    rng,
                )?,
            };
            x.extend_from_slice(&img);
            all_labels.extend_from_slice(&lab);
        }
        let mut x_shape = vec![idx.len(), 1];
        x_shape.extend_from_slice(patch);
        let mut label_shape = vec![labeled_bs];
        label_shape.extend_from_slice(patch);
        let labels = all_labels[..labeled_bs * per]
            .iter()
            .map(|&l| l as u32)
            .collect();
        Ok(Batch {
            x,
            x_shape,
            labels,
            label_shape,
            all_labels,
        })
    }
}

/// An image / label pair whose affines disagree: an error naming both unless `ignore`
/// (then a warning).
pub fn check_affines(image: &Path, label: &Path, ignore: bool) -> Result<()> {
    let (hi, hl) = (nifti::read_header(image)?, nifti::read_header(label)?);
    let dims = [hi.dim[1] as usize, hi.dim[2] as usize, hi.dim[3] as usize];
    if let Some(why) =
        nifti::affine_mismatch(&nifti::affine_of(&hi), &nifti::affine_of(&hl), dims, 1e-3)
    {
        if !ignore {
            return Err(Error::file(
                label,
                format!(
                    "{why} with its image {}: the labels would not lie on the anatomy; fix the header, or pass --ignore-affine to train on the voxel grids as they are",
                    image.display()
                ),
            ));
        }
        eprintln!(
            "warning: {} and {}: {why} (--ignore-affine: training on the voxel grids)",
            image.display(),
            label.display()
        );
    }
    Ok(())
}

/// The labelled stream of a saved split has the size the configuration gives.
fn check_labelled(s: &RunSplit, labelled: usize, file: &Path) -> Result<()> {
    if s.labelled.len() != labelled {
        return Err(Error::file(
            file,
            format!(
                "{} labelled items, the run's configuration gives {labelled}: restore the run's own files",
                s.labelled.len()
            ),
        ));
    }
    Ok(())
}

/// The cases validation runs on: LA `test.list` (as the reference), ACDC `val.list`; with
/// `val_split`, the validation cases of the split the training set was opened with
/// ([`validation_cases_of`]).
pub fn validation_cases(cfg: &TrainConfig) -> Result<Vec<Case>> {
    validation_cases_of(cfg, None)
}

/// The validation cases of `split` (when given), else [`validation_cases`]' defaults.
pub fn validation_cases_of(cfg: &TrainConfig, split: Option<&RunSplit>) -> Result<Vec<Case>> {
    if cfg.own.is_some() {
        // An own dataset: the held-out cases of the run's split, preprocessed.
        return Ok(super::own::open_run(cfg)?.1);
    }
    match (cfg.dataset, split) {
        (DatasetKind::La, Some(s)) => {
            let ds = LaDataset::open(&cfg.data)?;
            s.validation.iter().map(|id| ds.load(id)).collect()
        }
        (DatasetKind::Acdc, Some(s)) => {
            let ds = AcdcDataset::open(&cfg.data)?;
            s.validation.iter().map(|id| ds.load(id)).collect()
        }
        (DatasetKind::La, None) => {
            let ds = LaDataset::open(&cfg.data)?;
            ds.test.iter().map(|id| ds.load(id)).collect()
        }
        (DatasetKind::Acdc, None) => {
            let ds = AcdcDataset::open(&cfg.data)?;
            ds.cases(Split::Val).iter().map(|id| ds.load(id)).collect()
        }
    }
}

/// Where the validation cases come from, for messages.
pub fn validation_source(cfg: &TrainConfig, split: Option<&RunSplit>) -> String {
    match (cfg.own.is_some(), split, cfg.dataset) {
        (true, _, _) => "the run's split (splits.json)".into(),
        (false, Some(s), _) => format!("--val-split {}", s.val_split),
        (false, None, DatasetKind::La) => "test.list".into(),
        (false, None, DatasetKind::Acdc) => "splits/val.list".into(),
    }
}

/// The cases of the final evaluation: the test list of either layout (whatever
/// `val_split` says); own data: its validation cases.
pub fn test_cases(cfg: &TrainConfig) -> Result<Vec<Case>> {
    if cfg.own.is_some() {
        return validation_cases(cfg);
    }
    match cfg.dataset {
        DatasetKind::La => {
            let ds = LaDataset::open(&cfg.data)?;
            ds.test.iter().map(|id| ds.load(id)).collect()
        }
        DatasetKind::Acdc => {
            let ds = AcdcDataset::open(&cfg.data)?;
            ds.cases(Split::Test).iter().map(|id| ds.load(id)).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_slices_count_patients() {
        let c = [
            "p1_f1", "p1_f2", "p1_f1", "p2_f1", "p3_f2", "p3_f1", "p2_f2",
        ];
        assert_eq!(labelled_slices(&c, 1), 3);
        assert_eq!(labelled_slices(&c, 2), 4);
        assert_eq!(labelled_slices(&c, 3), 7);
    }
}
