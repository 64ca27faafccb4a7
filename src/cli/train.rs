//! `ssnet train`: train SS-Net (or AD-MT, `--method admt`) from a preset, a TOML config and
//! overrides, or resume a run.
//!
//! ```text
//! ssnet train --preset sample                                  # the bundled demo
//! ssnet train --method admt --preset la --data /path/to/LA     # AD-MT (ECCV 2024)
//! ssnet train --preset la   --data /path/to/LA   [--out runs/la]
//! ssnet train --preset acdc --data /path/to/ACDC --labelnum 7
//! ssnet train --config my.toml --max-iterations 2000 --lr 0.005
//! ssnet train --resume runs/la [--max-iterations 20000]
//! ssnet train --data MY_DATASET --out runs/mine [--labelnum 4]  # own data: see cli::own
//! ```
//!
//! Configuration layers (see `train::config`): preset → `--config` file → flags. Every key of
//! the config has a flag (`batch_size` ↔ `--batch-size`). `--resume DIR` continues the run
//! whose `last.safetensors` is in DIR (or is the given file) with the configuration stored in
//! it; flags still override it (e.g. `--max-iterations` to train longer), except those the
//! sampler state depends on. It writes into DIR (the checkpoint's folder), never into a
//! folder stored elsewhere. `--dataset` without a preset selects that dataset's preset; a
//! preset of the other dataset is refused.
//!
//! Nothing is written before the run is checked: no planned output may be one of the inputs
//! (the `--config` file, the dataset's files; [`crate::cli::outputs`]), then every volume is
//! read (see `train::run`).
//!
//! A fresh run refuses a folder that already holds `last.safetensors` unless `--overwrite`;
//! when `--out` is not given (neither flag nor config key) the default `runs/<preset>` gets a
//! `-2`, `-3`, ... suffix instead.
//!
//! `--val-split test|val|holdout:N|FILE` chooses the validation cases of the LA and ACDC
//! layouts (`train::valsplit`); AD-MT validates at epoch ends (`--val-interval-epochs`), and
//! keeps teacher 1's best as `best_teacher.safetensors` beside the student's `best`.
//!
//! With `final_eval` (the `sample` preset), the test split is then predicted with the best
//! checkpoint (else the last one): NIfTI label maps and PNG panels in `OUT/predictions/`,
//! the metrics table on stdout and `OUT/predictions/metrics.csv`.

use crate::cli::eval::Report;
use crate::cli::outputs::{files_below, refuse_overwriting_inputs, Plan};
use crate::data::dataset::{Case, ACDC_CLASS_NAMES, LA_SPACING_MM};
use crate::data::nifti;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::metrics::{class_mask, evaluate, largest_component, CONN_26};
use crate::nn::Model;
use crate::train::config::{DatasetKind, Method, Preset, TrainConfig};
use crate::train::data::test_cases;
use crate::train::run::{
    last_checkpoint, predict_case, write_case_png, Run, Summary, BEST, BEST_SIDECAR, BEST_TEACHER,
    BEST_TEACHER_SIDECAR, LAST, LAST_SIDECAR, TRAIN_LOG, VAL_LOG,
};
use crate::train::valsplit::{ValSplit, RUN_SPLITS};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// Start from a preset: la (train_ss_3d.py), acdc (train_ss_2d.py) or sample (bundled demo).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// TOML config file (keys as in RUN/config.toml; may name `preset = "..."`; unknown keys are errors).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Continue a run: its folder (holding last.safetensors) or the checkpoint file.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Start afresh even if the checkpoint folder already holds last.safetensors.
    #[arg(long)]
    pub overwrite: bool,
    /// Autotune convolution tiles per layer shape on this GPU (as SSNET_TUNE=1; the choices
    /// are cached in SSNET_TUNE_FILE or ~/.cache/ssnet/tune.json).
    #[arg(long)]
    pub tune: bool,

    /// Method: ssnet (SS-Net, the default) or admt (AD-MT: a student and two alternating
    /// EMA teachers; best.safetensors holds the student).
    #[arg(long, value_name = "METHOD")]
    pub method: Option<String>,
    /// Dataset layout and network: la (VNet, 3D) or acdc (UNet, 2D slices).
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetKind>,
    /// Dataset root folder.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Labelled scans (LA) or patients (ACDC: 3 → 68 slices, 7 → 136); own data: labelled
    /// cases kept (seeded), the others join the unlabelled stream.
    #[arg(long)]
    pub labelnum: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Labelled samples per batch.
    #[arg(long)]
    pub labeled_bs: Option<usize>,
    /// Network input: X,Y,Z (LA) or H,W (ACDC), multiples of 16 (also 112x112x80).
    #[arg(long, value_name = "SIZES")]
    pub patch: Option<String>,
    #[arg(long)]
    pub max_iterations: Option<u64>,
    /// Base learning rate.
    #[arg(long, alias = "base-lr")]
    pub lr: Option<f32>,
    /// Multiply the learning rate by --lr-gamma every this many iterations (0: constant).
    #[arg(long)]
    pub lr_step: Option<u64>,
    #[arg(long)]
    pub lr_gamma: Option<f32>,
    #[arg(long)]
    pub momentum: Option<f32>,
    #[arg(long)]
    pub weight_decay: Option<f32>,
    #[arg(long)]
    pub consistency: Option<f64>,
    /// Ramp-up length in units of 150 iterations.
    #[arg(long)]
    pub consistency_rampup: Option<f64>,
    /// VAT perturbation magnitude (the reference's --magnitude).
    #[arg(long, alias = "magnitude")]
    pub vat_eps: Option<f32>,
    #[arg(long)]
    pub vat_xi: Option<f32>,
    #[arg(long)]
    pub memory_per_class: Option<usize>,
    /// ascending (the reference: keep the lowest selector scores) or descending.
    #[arg(long, value_name = "ORDER")]
    pub memory_order: Option<String>,
    /// Dropout in the training passes: true or false.
    #[arg(long, value_name = "BOOL")]
    pub dropout: Option<bool>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Validate every N iterations (0: never). SS-Net's schedule; given to an AD-MT run, it
    /// replaces AD-MT's epoch schedule.
    #[arg(long)]
    pub val_interval: Option<u64>,
    /// First iteration that may validate (with --val-interval).
    #[arg(long)]
    pub val_start: Option<u64>,
    /// AD-MT: validate at the end of every N epochs (epoch 0 included) and after the last
    /// iteration, as the official code (default 4 for LA / 3D, 2 for ACDC / 2D; an epoch is
    /// ⌊unlabelled items / unlabelled samples per batch⌋ iterations).
    #[arg(long, value_name = "N")]
    pub val_interval_epochs: Option<u64>,
    /// Which cases validate (LA and ACDC layouts): test (the test list: LA's default, as the
    /// references: the best checkpoint is then selected on the test cases), val (the
    /// validation list: ACDC's default; LA: a val.list beside train.list), holdout:N (LA: the
    /// last N scans of train.list, held out of training) or a list file of case ids
    /// (held out of training where they are training cases). The split is written to
    /// splits.json beside the checkpoints and reused by --resume. Own data: --val-fraction /
    /// --val-cases.
    #[arg(long, value_name = "SPLIT")]
    pub val_split: Option<String>,
    /// 3D validation window X,Y,Z (default: --patch).
    #[arg(long, value_name = "SIZES")]
    pub val_patch: Option<String>,
    #[arg(long)]
    pub val_stride_xy: Option<usize>,
    #[arg(long)]
    pub val_stride_z: Option<usize>,
    /// Write last.safetensors every N iterations (0: every validation interval).
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Run folder (config.toml; checkpoints and logs by default).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// PNG snapshots at validation: true or false.
    #[arg(long, value_name = "BOOL")]
    pub snapshots: Option<bool>,
    /// Predict and evaluate the test split after training: true or false.
    #[arg(long, value_name = "BOOL")]
    pub final_eval: Option<bool>,
    /// Train even where a NIfTI image and its label map disagree in space (affines), on the
    /// voxel grids as they are (refused by default).
    #[arg(long)]
    pub ignore_affine: bool,
    /// Flags of an own dataset (a Decathlon, nnU-Net v2 or plain images/ + labels/ folder).
    #[command(flatten)]
    pub own: crate::cli::own::OwnArgs,
}

/// `112,112,80` or `112x112x80`.
fn parse_sizes(flag: &str, s: &str) -> Result<Vec<usize>> {
    s.split([',', 'x', 'X'])
        .map(|p| {
            p.trim().parse::<usize>().map_err(|_| {
                Error::config(format!("--{flag} {s:?}: expected sizes like 112,112,80"))
            })
        })
        .collect()
}

fn int(flag: &str, v: u64) -> Result<toml::Value> {
    i64::try_from(v)
        .map(toml::Value::Integer)
        .map_err(|_| Error::config(format!("--{flag} {v} is too large")))
}

impl TrainArgs {
    /// The flags given, as TOML keys.
    pub fn overrides(&self) -> Result<toml::Table> {
        use toml::Value as V;
        let mut t = toml::Table::new();
        let mut put = |k: &str, v: V| {
            t.insert(k.to_string(), v);
        };
        let path = |p: &Path| V::String(p.to_string_lossy().into_owned());
        let sizes = |flag: &str, s: &str| -> Result<V> {
            Ok(V::Array(
                parse_sizes(flag, s)?
                    .into_iter()
                    .map(|v| V::Integer(v as i64))
                    .collect(),
            ))
        };
        if let Some(v) = &self.method {
            put("method", V::String(v.clone()));
        }
        if let Some(v) = self.dataset {
            put("dataset", V::String(v.name().into()));
        }
        if let Some(v) = &self.data {
            put("data", path(v));
        }
        if let Some(v) = self.labelnum {
            put("labelnum", int("labelnum", v as u64)?);
        }
        if let Some(v) = self.batch_size {
            put("batch_size", int("batch-size", v as u64)?);
        }
        if let Some(v) = self.labeled_bs {
            put("labeled_bs", int("labeled-bs", v as u64)?);
        }
        if let Some(v) = &self.patch {
            put("patch", sizes("patch", v)?);
        }
        if let Some(v) = self.max_iterations {
            put("max_iterations", int("max-iterations", v)?);
        }
        if let Some(v) = self.lr {
            put("base_lr", V::Float(v as f64));
        }
        if let Some(v) = self.lr_step {
            put("lr_step", int("lr-step", v)?);
        }
        if let Some(v) = self.lr_gamma {
            put("lr_gamma", V::Float(v as f64));
        }
        if let Some(v) = self.momentum {
            put("momentum", V::Float(v as f64));
        }
        if let Some(v) = self.weight_decay {
            put("weight_decay", V::Float(v as f64));
        }
        if let Some(v) = self.consistency {
            put("consistency", V::Float(v));
        }
        if let Some(v) = self.consistency_rampup {
            put("consistency_rampup", V::Float(v));
        }
        if let Some(v) = self.vat_eps {
            put("vat_eps", V::Float(v as f64));
        }
        if let Some(v) = self.vat_xi {
            put("vat_xi", V::Float(v as f64));
        }
        if let Some(v) = self.memory_per_class {
            put("memory_per_class", int("memory-per-class", v as u64)?);
        }
        if let Some(v) = &self.memory_order {
            put("memory_order", V::String(v.clone()));
        }
        if let Some(v) = self.dropout {
            put("dropout", V::Boolean(v));
        }
        if let Some(v) = self.seed {
            put("seed", int("seed", v)?);
        }
        if let Some(v) = self.val_interval {
            put("val_interval", int("val-interval", v)?);
        }
        if let Some(v) = self.val_start {
            put("val_start", int("val-start", v)?);
        }
        if let Some(v) = self.val_interval_epochs {
            put("val_interval_epochs", int("val-interval-epochs", v)?);
        }
        if let Some(v) = &self.val_split {
            put("val_split", V::String(v.clone()));
        }
        if let Some(v) = &self.val_patch {
            put("val_patch", sizes("val-patch", v)?);
        }
        if let Some(v) = self.val_stride_xy {
            put("val_stride_xy", int("val-stride-xy", v as u64)?);
        }
        if let Some(v) = self.val_stride_z {
            put("val_stride_z", int("val-stride-z", v as u64)?);
        }
        if let Some(v) = self.checkpoint_every {
            put("checkpoint_every", int("checkpoint-every", v)?);
        }
        if let Some(v) = &self.out {
            put("out", path(v));
        }
        if let Some(v) = &self.checkpoint_dir {
            put("checkpoint_dir", path(v));
        }
        if let Some(v) = &self.log_dir {
            put("log_dir", path(v));
        }
        if let Some(v) = self.snapshots {
            put("snapshots", V::Boolean(v));
        }
        if let Some(v) = self.final_eval {
            put("final_eval", V::Boolean(v));
        }
        if self.ignore_affine {
            put("ignore_affine", V::Boolean(true));
        }
        Ok(t)
    }
}

/// The configuration of a fresh run from the arguments, with its run folder settled.
pub fn fresh_config(a: &TrainArgs) -> Result<TrainConfig> {
    let overrides = a.overrides()?;
    let file = match &a.config {
        Some(p) => Some((
            std::fs::read_to_string(p)
                .map_err(|e| Error::file(p, format!("cannot read config: {e}")))?,
            p.clone(),
        )),
        None => None,
    };
    let mut cfg = TrainConfig::resolve(
        a.preset,
        file.as_ref().map(|(t, p)| (t.as_str(), p.as_path())),
        &overrides,
    )?;
    let out_given = a.out.is_some()
        || file.as_ref().is_some_and(|(t, _)| {
            t.parse::<toml::Table>()
                .is_ok_and(|t| t.contains_key("out"))
        });
    let taken = |c: &TrainConfig| c.checkpoint_dir().join(LAST).exists();
    if taken(&cfg) && !a.overwrite {
        if out_given || cfg.checkpoint_dir.is_some() {
            return Err(Error::file(
                cfg.checkpoint_dir().join(LAST),
                "a run is already there: --resume it, pass --overwrite to start afresh, or choose another --out",
            ));
        }
        let base = cfg.out.clone();
        let mut k = 2;
        while taken(&cfg) {
            cfg.out = PathBuf::from(format!("{}-{k}", base.display()));
            k += 1;
        }
    }
    Ok(cfg)
}

/// The GPU, with tile autotuning turned on when `tune` (SSNET_TUNE=1 turns it on anyway).
pub(crate) fn open_gpu(device: Option<&str>, tune: bool) -> Result<Arc<Gpu>> {
    let gpu = Gpu::new(device)?;
    if tune && !gpu.tuning_enabled() {
        gpu.enable_tuning(None);
    }
    Ok(gpu)
}

/// What a run writes (its fixed files, and the folders of files named per case or per
/// validation) against what it reads (the config file, every file of the dataset folder).
pub(crate) fn check_outputs(cfg: &TrainConfig, config_file: Option<&Path>) -> Result<()> {
    let (ck, lg) = (cfg.checkpoint_dir(), cfg.log_dir());
    crate::cli::outputs::refuse_outputs_inside(
        &cfg.data,
        &[
            (cfg.out.as_path(), "--out"),
            (ck.as_path(), "--checkpoint-dir"),
            (lg.as_path(), "--log-dir"),
        ],
    )?;
    let mut inputs = files_below(&cfg.data, 3);
    inputs.extend(config_file.map(Path::to_path_buf));
    if let Some(ValSplit::List(list)) = cfg.val_split.as_deref().map(ValSplit::parse).transpose()? {
        inputs.push(list);
    }
    let mut writes = vec![
        cfg.out.join("config.toml"),
        lg.join(TRAIN_LOG),
        lg.join(VAL_LOG),
    ];
    for n in [LAST, BEST, LAST_SIDECAR, BEST_SIDECAR] {
        writes.push(ck.join(n));
    }
    if cfg.method == Method::Admt {
        writes.extend([ck.join(BEST_TEACHER), ck.join(BEST_TEACHER_SIDECAR)]);
    }
    if cfg.val_split.is_some() {
        writes.push(ck.join(RUN_SPLITS));
    }
    let mut write_dirs = vec![];
    if cfg.final_eval {
        write_dirs.push(cfg.out.join("predictions"));
    }
    if cfg.snapshots {
        write_dirs.push(lg.join("snapshots"));
    }
    refuse_overwriting_inputs(&Plan {
        inputs,
        writes,
        write_dirs,
        flag: "--out (or --checkpoint-dir / --log-dir)",
    })
}

pub fn run(a: TrainArgs, device: Option<&str>) -> Result<()> {
    if crate::cli::own::wants_own(&a) {
        return crate::cli::own::train(&a, device);
    }
    let mut run = match &a.resume {
        Some(dir) => {
            if a.preset.is_some() || a.config.is_some() {
                return Err(Error::config("--resume takes the configuration stored in the checkpoint: drop --preset / --config (flags still override)"));
            }
            let overrides = a.overrides()?;
            check_outputs(&Run::resume_config(dir, &overrides)?, None)?;
            let gpu = open_gpu(device, a.tune)?;
            println!("resuming {}", last_checkpoint(dir).display());
            Run::resume(&gpu, dir, &overrides)?
        }
        None => {
            let cfg = fresh_config(&a)?;
            check_outputs(&cfg, a.config.as_deref())?;
            Run::new(&open_gpu(device, a.tune)?, cfg)?
        }
    };
    let gpu = run.learner.model().gpu.clone();
    let summary = run.train()?;
    print_summary(&run.cfg, &summary);
    if run.cfg.final_eval {
        final_eval(&gpu, &run.cfg)?;
    }
    Ok(())
}

pub(crate) fn print_summary(cfg: &TrainConfig, s: &Summary) {
    println!(
        "done: {} iterations ({} in this run) in {:.1} s",
        s.iterations, s.iterations_this_run, s.elapsed_s
    );
    if let Some(l) = &s.last_losses {
        println!(
            "last step: loss {:.4}, dice {:.4}, ce {:.4}, lds {:.4}, cl_l {:.4}, cl_u {:.4}, lr {}",
            l.loss, l.loss_dice, l.loss_ce, l.loss_lds, l.loss_cl_l, l.loss_cl_u, l.lr
        );
    }
    if let Some(l) = &s.last_admt_losses {
        println!(
            "last step (AD-MT): loss {:.4}, sup {:.4} (ce {:.4}, dice {:.4}), unsup {:.4} x {:.4}, lr {}",
            l.loss, l.loss_sup, l.loss_ce, l.loss_dice, l.loss_unsup, l.unsup_weight, l.lr
        );
    }
    let admt = cfg.method == Method::Admt;
    let who = if admt { " (student)" } else { "" };
    match s.best {
        Some((d, it)) => println!(
            "best validation Dice{who} {d:.4} at iteration {it}: {}",
            s.checkpoint_dir.join(BEST).display()
        ),
        None if cfg.val_interval == 0 && cfg.val_epochs().is_none() => {
            println!("no validation (val_interval = 0)")
        }
        None => println!("no validation improved on Dice 0 (no {BEST})"),
    }
    if let (true, Some((d, it))) = (admt, s.best_teacher) {
        println!(
            "best validation Dice (teacher 1) {d:.4} at iteration {it}: {}",
            s.checkpoint_dir.join(BEST_TEACHER).display()
        );
    }
    println!("last checkpoint: {}", s.checkpoint_dir.join(LAST).display());
    println!("logs: {}", s.log_dir.join("train.jsonl").display());
}

/// Predict the test split with the best (else last) checkpoint: NIfTI + PNG per case, then
/// the metrics (LA: largest connected component kept, as the reference's `--nms 1`).
pub fn final_eval(gpu: &Arc<Gpu>, cfg: &TrainConfig) -> Result<Report> {
    let best = cfg.checkpoint_dir().join(BEST);
    let ckpt = if best.is_file() {
        best
    } else {
        cfg.checkpoint_dir().join(LAST)
    };
    let model = match cfg.method {
        // AD-MT's last.safetensors is its resume file: the student is evaluated.
        Method::Admt if ckpt.file_name() == Some(LAST.as_ref()) => {
            crate::admt::AdmtTrainer::load_resume(gpu, &ckpt)?.student
        }
        _ => Model::load(gpu, &ckpt)?,
    };
    let cases = test_cases(cfg)?;
    let dir = cfg.out.join("predictions");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::file(&dir, format!("cannot create folder: {e}")))?;
    println!(
        "predicting {} test cases with {} into {}",
        cases.len(),
        ckpt.display(),
        dir.display()
    );
    let la = cfg.dataset == DatasetKind::La;
    let classes: Vec<(u8, String)> = match cfg.dataset {
        DatasetKind::La => vec![(1, "LA".to_string())],
        DatasetKind::Acdc => ACDC_CLASS_NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u8 + 1, n.to_string()))
            .collect(),
    };
    let mut rows = Vec::new();
    for case in &cases {
        let mut pred = predict_case(&model, cfg, case)?;
        if la {
            let fg = largest_component(&class_mask(&pred, 1), &case.shape, CONN_26)?;
            pred = fg.iter().map(|&b| b as u8).collect();
        }
        write_prediction(&dir.join(format!("{}.nii.gz", case.id)), case, &pred)?;
        write_case_png(
            &dir.join(format!("{}.png", case.id)),
            case,
            &pred,
            cfg.dataset,
        )?;
        let mut row = Vec::new();
        for (c, _) in &classes {
            row.push(
                evaluate(
                    &class_mask(&pred, *c),
                    &class_mask(&case.label, *c),
                    &case.shape,
                    None,
                )
                .map_err(|e| Error::file(&case.label_path, e))?,
            );
        }
        rows.push((case.id.clone(), row));
    }
    let report = Report {
        classes,
        cases: rows,
        units: "voxel",
        largest_cc: la,
    };
    print!("{}", report.table());
    let csv = dir.join("metrics.csv");
    std::fs::write(&csv, report.csv())
        .map_err(|e| Error::file(&csv, format!("cannot write CSV: {e}")))?;
    println!(
        "wrote {} and {} predictions (NIfTI + PNG) in {}",
        csv.display(),
        cases.len(),
        dir.display()
    );
    Ok(report)
}

/// A label map as NIfTI, aligned with its image: the image's header (ACDC), else an LA
/// header with the challenge's 0.625 mm voxels (`[X, Y, Z]` data → NIfTI x, y, z).
fn write_prediction(path: &Path, case: &Case, pred: &[u8]) -> Result<()> {
    match &case.header {
        Some(h) => nifti::write_labels_with_header(path, pred, h),
        None => {
            let [x, y, z] = case.shape;
            let reference = nifti::Volume::new(
                nifti::xyz_to_zyx(&case.image, case.shape),
                [x, y, z],
                [LA_SPACING_MM; 3],
            )?;
            nifti::write_labels(path, &nifti::xyz_to_zyx(pred, case.shape), &reference)
        }
    }
}
