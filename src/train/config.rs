//! Every setting of a training run, the presets that reproduce the reference scripts, TOML
//! config files and command-line overrides.
//!
//! A run's configuration is built in layers, each a set of TOML keys over the previous one:
//! the preset (`la`, `acdc` or `sample`; a config file may name it with `preset = "..."`),
//! then the config file's keys, then the command-line overrides. The merged table is
//! deserialised into [`TrainConfig`] (`deny_unknown_fields`: an unknown key is an error naming
//! it) and [`TrainConfig::validate`] rejects out-of-range values with a one-line error naming
//! the key. The resolved configuration is written to `config.toml` in the run folder and into
//! every checkpoint; `ssnet train --config RUN/config.toml` repeats a run.

use super::plan::OwnData;
use crate::error::{Error, Result};
use crate::nn::{Arch, ModelConfig};
use crate::ssnet::{MemoryOrder, TrainerConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which dataset layout and network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// LA 2018 in SS-Net's HDF5 layout; VNet (3D), 2 classes.
    La,
    /// ACDC in the NIfTI layout of `shared/data/acdc`; UNet on 2D slices, 4 classes.
    Acdc,
}

impl DatasetKind {
    pub fn arch(self) -> Arch {
        match self {
            DatasetKind::La => Arch::VNet,
            DatasetKind::Acdc => Arch::UNet,
        }
    }
    pub fn num_classes(self) -> usize {
        match self {
            DatasetKind::La => 2,
            DatasetKind::Acdc => 4,
        }
    }
    /// Spatial dimensions of a network input (3 for LA, 2 for ACDC).
    pub fn dims(self) -> usize {
        self.arch().spatial_dims()
    }
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::La => "la",
            DatasetKind::Acdc => "acdc",
        }
    }
    pub fn model_config(self) -> ModelConfig {
        ModelConfig {
            arch: self.arch(),
            in_channels: 1,
            num_classes: self.num_classes(),
        }
    }
}

/// The semi-supervised method of a run: its networks, step and state; the data, sampler,
/// augmentation, loop, validation, checkpoints and logs are shared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// SS-Net (Wu et al., MICCAI 2022): one network, the LDS (VAT) and prototype terms.
    #[default]
    Ssnet,
    /// AD-MT (Zhao et al., ECCV 2024): a student and two alternately EMA-updated teachers
    /// ([`crate::admt`]); the settings of `AdmtConfig::la()` / `acdc()` with the run's
    /// learning rate, momentum, weight decay, dropout and iterations, and its poly LR
    /// (`lr_step`, `lr_gamma`, `consistency*`, `vat_*` and `memory_*` do not apply).
    Admt,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Ssnet => "ssnet",
            Method::Admt => "admt",
        }
    }
    /// SS-Net is the default and is not written out, so that SS-Net configurations and
    /// checkpoints keep the bytes they had before methods existed.
    pub fn is_ssnet(&self) -> bool {
        *self == Method::Ssnet
    }
}

/// The presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// `train_ss_3d.py`: LA, VNet, 4 labelled scans, batch 2+2, 112×112×80, 15000 iterations.
    La,
    /// `train_ss_2d.py`: ACDC, UNet, 3 labelled patients (68 slices), batch 12+12, 256×256,
    /// 30000 iterations.
    Acdc,
    /// The bundled sample (`data/sample`, a few ACDC crops): UNet at 32×32 (lavapipe-sized),
    /// batch 2+2, 40 iterations, validation every 20, then prediction and evaluation of the
    /// test cases.
    Sample,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::La => "la",
            Preset::Acdc => "acdc",
            Preset::Sample => "sample",
        }
    }
}

/// Every setting of a run. Keys are the TOML keys; the CLI flag of `key_name` is
/// `--key-name`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `ssnet` (the default) or `admt`.
    #[serde(default, skip_serializing_if = "Method::is_ssnet")]
    pub method: Method,
    /// `la` (VNet, 3D) or `acdc` (UNet, 2D slices).
    pub dataset: DatasetKind,
    /// Dataset root (LA: holds `train.list`, `test.list`, `2018LA_Seg_Training Set/`; ACDC:
    /// `splits/`, `train/`, `val/`, `test/`). Relative paths are relative to the working folder.
    pub data: PathBuf,
    /// Labelled cases: LA scans (the first `labelnum` of `train.list`); ACDC patients (the
    /// slices of the first `labelnum` patients of `train_slices.list`: 3 → 68, 7 → 136).
    pub labelnum: usize,
    /// Samples per batch (labelled first).
    pub batch_size: usize,
    /// Labelled samples per batch.
    pub labeled_bs: usize,
    /// Network input size: `[x, y, z]` (LA crop) or `[h, w]` (ACDC zoom); multiples of 16.
    pub patch: Vec<usize>,
    pub max_iterations: u64,
    /// SGD learning rate at iteration 0.
    pub base_lr: f32,
    /// Multiply the learning rate by `lr_gamma` every `lr_step` iterations (0: constant).
    pub lr_step: u64,
    pub lr_gamma: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Weight of the unsupervised terms after the ramp-up.
    pub consistency: f64,
    /// Ramp-up length in units of 150 iterations.
    pub consistency_rampup: f64,
    /// VAT perturbation magnitude (the reference's `--magnitude`).
    pub vat_eps: f32,
    /// VAT finite-difference step of the power iteration.
    pub vat_xi: f32,
    /// Prototype memory rows per class.
    pub memory_per_class: usize,
    /// `ascending` keeps the lowest selector scores (the reference), `descending` the highest.
    pub memory_order: MemoryOrder,
    /// Dropout in the training passes (the reference trains with it).
    pub dropout: bool,
    /// Seeds the weights, the sampler, the augmentations and every step's random draws.
    pub seed: u64,
    /// Validate every this many iterations (0: never).
    pub val_interval: u64,
    /// First iteration at which validation may run (LA: 2000; ACDC: 0).
    pub val_start: u64,
    /// AD-MT: validate at the end of every this many epochs (epoch 0 included) and after the
    /// last iteration, as the official code (`test_interval_ep`); an epoch is ⌊unlabelled
    /// items / unlabelled samples per batch⌋ iterations. Absent: 4 for the 3D (LA) recipe
    /// and 2 for the 2D (ACDC) one, unless `val_interval` is given, which then applies
    /// (stored as 0: every `val_interval` iterations from `val_start`). SS-Net validates
    /// every `val_interval` iterations (this key is refused for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_interval_epochs: Option<u64>,
    /// Which cases validate a run of the LA or ACDC layout ([`super::valsplit`]): `test`
    /// (the test list), `val` (the validation list), `holdout:N` (LA: the last N scans of
    /// `train.list`, held out of training) or a list file of case ids. Absent: what the
    /// reference does, `test` for LA (the best checkpoint is then selected on the test
    /// cases) and `val` for ACDC. Own data: `--val-fraction` / `--val-cases` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_split: Option<String>,
    /// 3D validation: sliding-window patch (empty: `patch`) and strides.
    #[serde(default)]
    pub val_patch: Vec<usize>,
    pub val_stride_xy: usize,
    pub val_stride_z: usize,
    /// Write `last.safetensors` every this many iterations (0: at each validation interval,
    /// else every 200), and always at the end.
    pub checkpoint_every: u64,
    /// The run folder: `config.toml`, and by default the checkpoints and logs.
    pub out: PathBuf,
    /// Where `last.safetensors` and `best.safetensors` go (default: `out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Where `train.jsonl`, `val.jsonl` and `snapshots/` go (default: `out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<PathBuf>,
    /// PNG snapshots (image | label | prediction of a middle slice) at each validation.
    pub snapshots: bool,
    /// After training: predict the test split with the best checkpoint (NIfTI + PNG in
    /// `out/predictions`) and evaluate it.
    pub final_eval: bool,
    /// Train on NIfTI image / label pairs whose affines disagree (by default refused: the
    /// label map would not lie on the anatomy it labels).
    #[serde(default)]
    pub ignore_affine: bool,
    /// A user's own dataset (`ssnet train --data DIR` on a Decathlon, nnU-Net v2 or plain
    /// layout): its plan and preprocessing; `dataset` then names the preset whose recipe
    /// applies (`la`: 3D VNet, `acdc`: 2D UNet). See [`super::plan`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own: Option<OwnData>,
}

/// AD-MT's validation interval in epochs by recipe, as its configurations: 4 for LA
/// (`config_3d_la_aut.yml`), 2 for ACDC (`config_2d_aut.yml`).
pub fn admt_val_epochs(kind: DatasetKind) -> u64 {
    match kind {
        DatasetKind::La => 4,
        DatasetKind::Acdc => 2,
    }
}

/// Keys of where a run writes: kept out of checkpoints (a checkpoint's bytes do not depend
/// on where it was written, and `--resume DIR` writes into DIR).
pub const LOCATION_KEYS: [&str; 3] = ["out", "checkpoint_dir", "log_dir"];

impl TrainConfig {
    /// The reference defaults of a preset.
    pub fn preset(p: Preset) -> TrainConfig {
        match p {
            Preset::La => TrainConfig {
                method: Method::Ssnet,
                dataset: DatasetKind::La,
                data: PathBuf::from("data/la"),
                labelnum: 4,
                batch_size: 4,
                labeled_bs: 2,
                patch: vec![112, 112, 80],
                max_iterations: 15000,
                base_lr: 0.01,
                lr_step: 2500,
                lr_gamma: 0.1,
                momentum: 0.9,
                weight_decay: 1e-4,
                consistency: 1.0,
                consistency_rampup: 40.0,
                vat_eps: 10.0,
                vat_xi: 10.0,
                memory_per_class: 32,
                memory_order: MemoryOrder::Ascending,
                dropout: true,
                seed: 1337,
                val_interval: 200,
                val_start: 2000,
                val_interval_epochs: None,
                val_split: None,
                val_patch: vec![],
                val_stride_xy: 18,
                val_stride_z: 4,
                checkpoint_every: 0,
                out: PathBuf::from("runs/la"),
                checkpoint_dir: None,
                log_dir: None,
                snapshots: true,
                final_eval: false,
                ignore_affine: false,
                own: None,
            },
            Preset::Acdc => TrainConfig {
                dataset: DatasetKind::Acdc,
                data: PathBuf::from("data/acdc"),
                labelnum: 3,
                batch_size: 24,
                labeled_bs: 12,
                patch: vec![256, 256],
                max_iterations: 30000,
                lr_step: 0,
                consistency: 0.1,
                consistency_rampup: 200.0,
                vat_eps: 6.0,
                val_start: 0,
                out: PathBuf::from("runs/acdc"),
                ..Self::preset(Preset::La)
            },
            Preset::Sample => TrainConfig {
                data: sample_data_dir(),
                labelnum: 1,
                batch_size: 4,
                labeled_bs: 2,
                patch: vec![32, 32],
                max_iterations: 40,
                val_interval: 20,
                checkpoint_every: 20,
                out: PathBuf::from("runs/sample"),
                final_eval: true,
                ..Self::preset(Preset::Acdc)
            },
        }
    }

    /// Classes including background: the dataset's ([`DatasetKind::num_classes`]), or an own
    /// dataset's plan.
    pub fn num_classes(&self) -> usize {
        self.own
            .as_ref()
            .map_or(self.dataset.num_classes(), |o| o.num_classes)
    }

    /// The network of the run.
    pub fn model_config(&self) -> ModelConfig {
        ModelConfig {
            num_classes: self.num_classes(),
            ..self.dataset.model_config()
        }
    }

    /// The objective and optimiser settings for [`crate::ssnet::Trainer`].
    pub fn trainer_config(&self) -> TrainerConfig {
        TrainerConfig {
            labeled_bs: self.labeled_bs,
            base_lr: self.base_lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            consistency: self.consistency,
            consistency_rampup: self.consistency_rampup,
            vat_xi: self.vat_xi,
            vat_eps: self.vat_eps,
            memory_per_class: self.memory_per_class,
            memory_order: self.memory_order,
            lr_step: (self.lr_step > 0).then_some(self.lr_step),
            lr_gamma: self.lr_gamma,
            dropout: self.dropout,
        }
    }

    /// AD-MT's settings for this run: the official LA settings for the 3D (VNet) recipe, the
    /// ACDC ones for the 2D (UNet) recipe, with the run's learning rate, momentum, weight
    /// decay, dropout and iterations.
    pub fn admt_config(&self) -> crate::admt::AdmtConfig {
        let base = match self.dataset {
            DatasetKind::La => crate::admt::AdmtConfig::la(),
            DatasetKind::Acdc => crate::admt::AdmtConfig::acdc(),
        };
        crate::admt::AdmtConfig {
            // The f32 as written (0.01, not 0.009999999776).
            base_lr: self
                .base_lr
                .to_string()
                .parse()
                .unwrap_or(self.base_lr as f64),
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            max_iterations: self.max_iterations,
            dropout: self.dropout,
            ..base
        }
    }

    /// The sliding-window patch of 3D validation.
    pub fn val_patch(&self) -> Vec<usize> {
        if self.val_patch.is_empty() {
            self.patch.clone()
        } else {
            self.val_patch.clone()
        }
    }

    /// Iterations between two `last.safetensors` writes.
    pub fn checkpoint_interval(&self) -> u64 {
        match (self.checkpoint_every, self.val_interval) {
            (0, 0) => 200,
            (0, v) => v,
            (c, _) => c,
        }
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.checkpoint_dir
            .clone()
            .unwrap_or_else(|| self.out.clone())
    }

    pub fn log_dir(&self) -> PathBuf {
        self.log_dir.clone().unwrap_or_else(|| self.out.clone())
    }

    /// Whether validation runs after iteration `iter` (counted from 1), every `val_interval`
    /// iterations from `val_start` (SS-Net; AD-MT when [`TrainConfig::val_epochs`] is `None`).
    pub fn validates_at(&self, iter: u64) -> bool {
        self.val_interval > 0 && iter >= self.val_start && iter.is_multiple_of(self.val_interval)
    }

    /// AD-MT's validation interval in epochs ([`TrainConfig::val_interval_epochs`], its
    /// default resolved); `None`: validation follows `val_interval` (always for SS-Net).
    pub fn val_epochs(&self) -> Option<u64> {
        match (self.method, self.val_interval_epochs) {
            (Method::Ssnet, _) | (Method::Admt, Some(0)) => None,
            (Method::Admt, Some(k)) => Some(k),
            (Method::Admt, None) => Some(admt_val_epochs(self.dataset)),
        }
    }

    /// Whether validation runs after iteration `iter` (counted from 1) of a run whose epochs
    /// last `epoch_len` iterations: AD-MT's schedule (the end of epochs 0, k, 2k, ... and
    /// the last iteration, `max_iterations`), else [`TrainConfig::validates_at`].
    pub fn validates_after(&self, iter: u64, epoch_len: u64) -> bool {
        match self.val_epochs() {
            None => self.validates_at(iter),
            Some(k) => {
                let e = epoch_len.max(1);
                iter == self.max_iterations
                    || (iter.is_multiple_of(e) && (iter / e - 1).is_multiple_of(k))
            }
        }
    }

    /// Range checks; each error is one line naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(Error::config(format!("{key} {why}")));
        let d = self.dataset.dims();
        if self.labelnum == 0 {
            return bad(
                "labelnum",
                "= 0 is out of range: at least one labelled case is needed".into(),
            );
        }
        if self.batch_size < 2 {
            return bad(
                "batch_size",
                format!(
                    "= {} is out of range: a batch holds labelled and unlabelled samples (>= 2)",
                    self.batch_size
                ),
            );
        }
        if self.labeled_bs == 0 || self.labeled_bs >= self.batch_size {
            return bad(
                "labeled_bs",
                format!(
                    "= {} is out of range: it must be at least 1 and smaller than batch_size = {}",
                    self.labeled_bs, self.batch_size
                ),
            );
        }
        check_patch("patch", &self.patch, d)?;
        if !self.val_patch.is_empty() {
            check_patch("val_patch", &self.val_patch, d)?;
        }
        if self.max_iterations == 0 {
            return bad("max_iterations", "= 0 is out of range: at least 1".into());
        }
        let pos = |key: &str, v: f64, max: f64| -> Result<()> {
            if !(v.is_finite() && v > 0.0 && v <= max) {
                return Err(Error::config(format!(
                    "{key} = {v} is out of range (0, {max}]"
                )));
            }
            Ok(())
        };
        let nonneg = |key: &str, v: f64, max: f64| -> Result<()> {
            if !(v.is_finite() && (0.0..=max).contains(&v)) {
                return Err(Error::config(format!(
                    "{key} = {v} is out of range [0, {max}]"
                )));
            }
            Ok(())
        };
        pos("base_lr", self.base_lr as f64, 10.0)?;
        pos("lr_gamma", self.lr_gamma as f64, 1.0)?;
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return bad(
                "momentum",
                format!("= {} is out of range [0, 1)", self.momentum),
            );
        }
        nonneg("weight_decay", self.weight_decay as f64, 1.0)?;
        nonneg("consistency", self.consistency, 1e3)?;
        nonneg("consistency_rampup", self.consistency_rampup, 1e9)?;
        nonneg("vat_eps", self.vat_eps as f64, 1e4)?;
        pos("vat_xi", self.vat_xi as f64, 1e4)?;
        if self.memory_per_class == 0 || self.memory_per_class > 1 << 20 {
            return bad(
                "memory_per_class",
                format!(
                    "= {} is out of range [1, {}]",
                    self.memory_per_class,
                    1 << 20
                ),
            );
        }
        if self.val_stride_xy == 0 {
            return bad("val_stride_xy", "= 0 is out of range: at least 1".into());
        }
        if self.val_stride_z == 0 {
            return bad("val_stride_z", "= 0 is out of range: at least 1".into());
        }
        if self.out.as_os_str().is_empty() {
            return bad("out", "is empty: name the run folder".into());
        }
        if self.method == Method::Ssnet && self.val_interval_epochs.is_some() {
            return bad(
                "val_interval_epochs",
                "applies to method = admt (AD-MT validates by epochs, as its reference); SS-Net validates every val_interval iterations: use --val-interval".into(),
            );
        }
        if let Some(v) = &self.val_split {
            let split = super::valsplit::ValSplit::parse(v)?;
            if self.own.is_some() {
                return Err(Error::config(format!(
                    "{} = {v:?} applies to the LA and ACDC layouts; an own dataset holds out its validation cases with --val-fraction F or --val-cases FILE",
                    super::valsplit::OPTION
                )));
            }
            split.check_dataset(self.dataset)?;
        }
        Ok(())
    }

    /// The configuration as stored in a checkpoint: TOML without [`LOCATION_KEYS`].
    pub fn to_checkpoint_toml(&self) -> Result<String> {
        let mut t = toml::Table::try_from(self).map_err(|e| Error::config(e.to_string()))?;
        for k in LOCATION_KEYS {
            t.remove(k);
        }
        toml::to_string(&t)
            .map_err(|e| Error::config(format!("cannot write the configuration as TOML: {e}")))
    }

    /// The configuration as TOML (written to `RUN/config.toml`).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self)
            .map_err(|e| Error::config(format!("cannot write the configuration as TOML: {e}")))
    }

    /// Build a configuration: `preset` (else the file's `preset` key, else `la`), then the
    /// keys of `file` (TOML text, `source` names it in errors), then `overrides`.
    pub fn resolve(
        preset: Option<Preset>,
        file: Option<(&str, &Path)>,
        overrides: &toml::Table,
    ) -> Result<TrainConfig> {
        let mut file_table = match file {
            Some((text, path)) => text
                .parse::<toml::Table>()
                .map_err(|e| Error::file(path, format!("not a valid TOML config: {e}")))?,
            None => toml::Table::new(),
        };
        let file_preset = match file_table.remove("preset") {
            Some(v) => Some(Preset::deserialize(v).map_err(|e| {
                Error::file(
                    file.map_or(Path::new("config"), |f| f.1),
                    format!("preset: {e}"),
                )
            })?),
            None => None,
        };
        // No preset named: the dataset asked for (flag, else file) picks its reference preset
        // (default LA), so that `--dataset acdc` never trains ACDC with LA's settings.
        let dataset = overrides
            .get("dataset")
            .or_else(|| file_table.get("dataset"))
            .and_then(|v| v.as_str());
        let by_dataset = match dataset {
            Some("acdc") => Preset::Acdc,
            _ => Preset::La,
        };
        let named = preset.or(file_preset);
        if let (Some(p), Some(d)) = (named, dataset) {
            let theirs = TrainConfig::preset(p).dataset.name();
            if theirs != d {
                return Err(Error::config(format!(
                    "dataset = {d} with preset {}: that preset's settings (patch, batch, consistency, ramp-up, VAT, learning-rate steps) are for {theirs}; use --preset {d} or drop --dataset",
                    p.name()
                )));
            }
        }
        let preset = named.unwrap_or(by_dataset);
        let mut table = toml::Table::try_from(Self::preset(preset))
            .map_err(|e| Error::config(format!("preset {}: {e}", preset.name())))?;
        let what = file.map(|f| f.1.display().to_string());
        let interval_given =
            file_table.contains_key("val_interval") || overrides.contains_key("val_interval");
        for (k, v) in file_table {
            table.insert(k, v);
        }
        let mut cfg = Self::from_table(table, what.as_deref())?.with_overrides(overrides)?;
        // AD-MT validates by epochs unless an iteration interval was asked for (written out,
        // so that config.toml says what the run does).
        if cfg.method == Method::Admt && cfg.val_interval_epochs.is_none() {
            cfg.val_interval_epochs = Some(if interval_given {
                0
            } else {
                admt_val_epochs(cfg.dataset)
            });
        }
        Ok(cfg)
    }

    /// Deserialise a full table (unknown keys and wrong types are errors naming the key).
    pub fn from_table(table: toml::Table, source: Option<&str>) -> Result<TrainConfig> {
        TrainConfig::deserialize(toml::Value::Table(table)).map_err(|e| {
            let msg = e.to_string();
            match source {
                Some(s) => Error::file(s, msg),
                None => Error::config(msg),
            }
        })
    }

    /// Apply overrides (TOML keys) to a configuration, then validate.
    pub fn with_overrides(&self, overrides: &toml::Table) -> Result<TrainConfig> {
        let mut table = toml::Table::try_from(self).map_err(|e| Error::config(e.to_string()))?;
        for (k, v) in overrides {
            table.insert(k.clone(), v.clone());
        }
        let mut cfg = Self::from_table(table, None)?;
        // An iteration interval given to an AD-MT run replaces its epoch schedule.
        if cfg.method == Method::Admt
            && overrides.contains_key("val_interval")
            && !overrides.contains_key("val_interval_epochs")
        {
            cfg.val_interval_epochs = Some(0);
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

fn check_patch(key: &str, p: &[usize], dims: usize) -> Result<()> {
    if p.len() != dims {
        return Err(Error::config(format!(
            "{key} = {p:?} must have {dims} sizes for this dataset"
        )));
    }
    if p.iter().any(|&s| s == 0 || s % 16 != 0) {
        return Err(Error::config(format!("{key} = {p:?} is out of range: every size must be a positive multiple of 16 (four halvings)")));
    }
    Ok(())
}

/// `data/sample` of the working folder when it exists, else the one of this source tree.
fn sample_data_dir() -> PathBuf {
    let local = PathBuf::from("data/sample");
    if local.is_dir() {
        return local;
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
    if built.is_dir() {
        built
    } else {
        local
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_round_trip() {
        for p in [Preset::La, Preset::Acdc, Preset::Sample] {
            let c = TrainConfig::preset(p);
            c.validate().unwrap();
            let t = c.to_toml().unwrap();
            let back = TrainConfig::from_table(t.parse().unwrap(), None).unwrap();
            assert_eq!(back, c);
        }
    }

    #[test]
    fn dataset_flag_selects_its_preset() {
        let mut o = toml::Table::new();
        o.insert("dataset".into(), toml::Value::String("acdc".into()));
        let c = TrainConfig::resolve(None, None, &o).unwrap();
        assert_eq!(c, TrainConfig::preset(Preset::Acdc));
        // A preset of the other dataset is refused, in one line naming both.
        let e = TrainConfig::resolve(Some(Preset::La), None, &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dataset = acdc with preset la"), "{e}");
        // The sample preset is ACDC: consistent.
        TrainConfig::resolve(Some(Preset::Sample), None, &o).unwrap();
    }

    #[test]
    fn checkpoint_config_has_no_location() {
        let c = TrainConfig::preset(Preset::Sample);
        let t: toml::Table = c.to_checkpoint_toml().unwrap().parse().unwrap();
        assert!(LOCATION_KEYS.iter().all(|k| !t.contains_key(*k)));
        assert!(t.contains_key("seed") && t.contains_key("data"));
    }
}
