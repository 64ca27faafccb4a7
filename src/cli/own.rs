//! `ssnet train` and `ssnet predict` on a user's own dataset (a Decathlon, nnU-Net v2 or
//! plain `images/` + `labels/` folder; see `data::layout`).
//!
//! ```text
//! ssnet train --data DIR --out RUN [--labelnum N] [--patch ...] [--max-iterations K]
//!             [--val-fraction 0.2 | --val-cases FILE] [--unlabelled DIR] [--channel K]
//!             [--target-spacing X,Y,Z] [--network unet|vnet] [--normalize false] [--memory-gb G]
//! ssnet predict --checkpoint RUN/best.safetensors --input DIR_OR_FILE --output OUT
//! ```
//!
//! The configuration is layered as for the presets: the plan's preset (`la` for 3D, `acdc`
//! for 2D), the plan's values (patch, batch, strides), then `--config FILE`'s keys, then the
//! flags.
//!
//! A fresh run: the layout is read and checked, the split chosen (seeded), the plan made and
//! printed, every case read, checked and preprocessed, the patch checked against the adapter
//! — and only then is anything written: the run (config, logs), `RUN/plan.json`,
//! `RUN/splits.json`, the cache `RUN/preprocessed/<fingerprint>/`, then the checkpoints as
//! training goes. The configuration (and so every checkpoint) holds
//! the plan's preprocessing; `--resume RUN` reuses `splits.json` and the cache.
//!
//! Prediction with such a checkpoint preprocesses each scan the same way, predicts, and maps
//! the labels back onto the scan's own voxels: `OUT/<case>.nii.gz` has the input's dims and
//! header (qform and sform). Case ids drop the channel suffix (`<case>_0000.nii.gz` →
//! `<case>.nii.gz`) when every input has one; only the trained channel's files are read.

use super::outputs::{refuse_overwriting_inputs, shared_folder_note, Plan as Writes};
use super::predict::{collect_inputs, keep_largest_components, naming, Input, PredictArgs};
use super::train::{check_outputs, open_gpu, print_summary, TrainArgs};
use crate::data::layout::{self, split_channel, OpenOptions, OwnDataset, Split, SplitOptions};
use crate::data::nifti::{self, Volume};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Arch, Model};
use crate::train::config::{Method, Preset, TrainConfig};
use crate::train::own;
use crate::train::plan::{OwnData, Plan, PlanOptions};
use crate::train::run::{Run, LAST, META_CONFIG};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The own-data flags of `train` and `plan`.
#[derive(Args, Debug, Default, Clone)]
pub struct OwnArgs {
    /// Own data: fraction of the labelled cases held out for validation (seeded; default 0.2,
    /// at least 1 case; 0 turns validation off).
    #[arg(long, value_name = "F")]
    pub val_fraction: Option<f64>,
    /// Own data: a list file of validation case ids (instead of --val-fraction).
    #[arg(long, value_name = "FILE")]
    pub val_cases: Option<PathBuf>,
    /// Own data: another folder of unlabelled images (besides imagesUnlabelled/).
    #[arg(long, value_name = "DIR")]
    pub unlabelled: Option<PathBuf>,
    /// Own data: the channel to train on when the dataset has several.
    #[arg(long, value_name = "K")]
    pub channel: Option<usize>,
    /// Own data: target voxel size X,Y,Z in mm (default: the median of the labelled cases).
    #[arg(long, value_name = "X,Y,Z", value_delimiter = ',')]
    pub target_spacing: Option<Vec<f64>>,
    /// Own data: unet (2D slices) or vnet (3D) instead of the plan's choice.
    #[arg(long, value_name = "NET")]
    pub network: Option<String>,
    /// Own data: intensity normalisation (CT clip + z-score, else z-score per scan): true or false.
    #[arg(long, value_name = "BOOL")]
    pub normalize: Option<bool>,
    /// Own data: the memory budget (GiB) the planned patch is bounded by (default 8).
    #[arg(long, value_name = "G")]
    pub memory_gb: Option<f64>,
}

impl OwnArgs {
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            channel: self.channel,
            unlabelled: self.unlabelled.clone(),
        }
    }

    pub fn split_options(&self, labelnum: Option<usize>, seed: Option<u64>) -> SplitOptions {
        SplitOptions {
            labelnum,
            val_fraction: self.val_fraction.unwrap_or(0.2),
            val_cases: self.val_cases.clone(),
            seed: seed.unwrap_or(1337),
        }
    }

    /// The plan overrides; `patch` as given to `--patch`.
    pub fn plan_options(
        &self,
        patch: Option<&str>,
        batch_size: Option<usize>,
        labeled_bs: Option<usize>,
        max_binding: Option<u64>,
        method: Method,
    ) -> Result<PlanOptions> {
        let target_spacing = match &self.target_spacing {
            None => None,
            Some(v) => Some(<[f64; 3]>::try_from(v.as_slice()).map_err(|_| {
                Error::config(format!(
                    "--target-spacing {v:?}: give three sizes X,Y,Z in mm"
                ))
            })?),
        };
        let arch = match self.network.as_deref() {
            None => None,
            Some("unet" | "2d" | "2D") => Some(Arch::UNet),
            Some("vnet" | "3d" | "3D") => Some(Arch::VNet),
            Some(n) => {
                return Err(Error::config(format!(
                    "--network {n}: unet (2D slices) or vnet (3D)"
                )))
            }
        };
        let patch = patch
            .map(|s| {
                s.split([',', 'x', 'X'])
                    .map(|p| {
                        p.trim().parse::<usize>().map_err(|_| {
                            Error::config(format!("--patch {s:?}: expected sizes like 96,96,64"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        Ok(PlanOptions {
            target_spacing,
            patch,
            arch,
            normalize: self.normalize,
            batch_size,
            labeled_bs,
            memory_gib: self.memory_gb,
            max_binding,
            method,
        })
    }
}

/// Whether `ssnet train` should take the own-data path: a fresh run (no preset, dataset
/// kind or resume) whose `--data` is one of the three layouts.
pub fn wants_own(a: &TrainArgs) -> bool {
    a.resume.is_none()
        && a.preset.is_none()
        && a.dataset.is_none()
        && a.data.as_deref().is_some_and(layout::is_own_layout)
}

/// The keys of a `--config` TOML file (its `preset`, `dataset` and `own` are the plan's).
fn config_keys(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read config: {e}")))?;
    let mut t = text
        .parse::<toml::Table>()
        .map_err(|e| Error::file(path, format!("not a valid TOML config: {e}")))?;
    for k in ["preset", "dataset", "own"] {
        t.remove(k);
    }
    Ok(t)
}

/// The method of an own-data run: `--method`, else the `--config` file's `method`, else SS-Net.
fn method_of(a: &TrainArgs) -> Result<Method> {
    let mut t = match &a.config {
        Some(c) => config_keys(c)?,
        None => toml::Table::new(),
    };
    t.extend(a.overrides()?);
    match t.remove("method") {
        None => Ok(Method::Ssnet),
        Some(v) => v
            .clone()
            .try_into::<Method>()
            .map_err(|_| Error::config(format!("method = {v}: ssnet or admt"))),
    }
}

/// The dataset, split and plan of the arguments (nothing written).
pub fn plan_of(
    data: &Path,
    own: &OwnArgs,
    labelnum: Option<usize>,
    seed: Option<u64>,
    po: &PlanOptions,
) -> Result<(OwnDataset, Split, Plan)> {
    let ds = OwnDataset::open(data, &own.open_options())?;
    let split = Split::choose(&ds, &own.split_options(labelnum, seed))?;
    let plan = Plan::make(&ds, &split, po)?;
    Ok((ds, split, plan))
}

/// What the configuration keeps of the plan.
pub fn own_data(ds: &OwnDataset, plan: &Plan, own: &OwnArgs, labelnum: Option<usize>) -> OwnData {
    OwnData {
        layout: ds.kind,
        channel: ds.channel,
        modality: ds.modality().to_string(),
        num_classes: plan.num_classes,
        class_names: plan.class_names.clone(),
        preprocessing: crate::data::preprocess::Preprocessing {
            intensity: plan.intensity.clone(),
            target_spacing: Some(plan.target_spacing),
            crop_nonzero: true,
        },
        unlabelled: own.unlabelled.clone(),
        val_fraction: own.val_fraction.unwrap_or(0.2),
        val_cases: own.val_cases.clone(),
        labelnum,
    }
}

fn taken(cfg: &TrainConfig) -> bool {
    cfg.checkpoint_dir().join(LAST).exists()
}

/// `ssnet train --data DIR` on an own dataset (module docs).
pub fn train(a: &TrainArgs, device: Option<&str>) -> Result<()> {
    let data = a
        .data
        .clone()
        .ok_or_else(|| Error::config("train: --data DIR is required"))?;
    let gpu = open_gpu(device, a.tune)?;
    let po = a.own.plan_options(
        a.patch.as_deref(),
        a.batch_size,
        a.labeled_bs,
        Some(gpu.max_binding()),
        method_of(a)?,
    )?;
    let (ds, split, mut plan) = plan_of(&data, &a.own, a.labelnum, a.seed, &po)?;
    let own = own_data(&ds, &plan, &a.own, a.labelnum);
    let preset = if plan.network == Arch::VNet {
        Preset::La
    } else {
        Preset::Acdc
    };
    let int = |v: usize| toml::Value::Integer(v as i64);
    let mut t = toml::Table::new();
    t.insert(
        "patch".into(),
        toml::Value::Array(plan.patch.iter().map(|&p| int(p)).collect()),
    );
    t.insert("batch_size".into(), int(plan.batch_size));
    t.insert("labeled_bs".into(), int(plan.labeled_bs));
    t.insert("val_stride_xy".into(), int(plan.val_stride_xy));
    t.insert("val_stride_z".into(), int(plan.val_stride_z));
    let name = data
        .file_name()
        .map_or("own".to_string(), |n| n.to_string_lossy().into_owned());
    t.insert("out".into(), toml::Value::String(format!("runs/{name}")));
    // Then the keys of --config, then the flags: both override the plan.
    if let Some(c) = &a.config {
        for (k, v) in config_keys(c)? {
            t.insert(k, v);
        }
    }
    for (k, v) in a.overrides()? {
        t.insert(k, v);
    }
    t.insert("labelnum".into(), int(split.labelled.len()));
    t.insert(
        "own".into(),
        toml::Value::try_from(&own).map_err(|e| Error::config(format!("own data: {e}")))?,
    );
    if split.validation.is_empty() {
        t.insert("val_interval".into(), toml::Value::Integer(0));
    }
    let mut cfg = TrainConfig::resolve(Some(preset), None, &t)?;
    // plan.json says what is used, overrides included.
    plan.patch = cfg.patch.clone();
    plan.batch_size = cfg.batch_size;
    plan.labeled_bs = cfg.labeled_bs;
    plan.val_stride_xy = cfg.val_stride_xy;
    plan.val_stride_z = cfg.val_stride_z;
    println!("{}", plan.describe());
    if taken(&cfg) && !a.overwrite {
        if a.out.is_some() || cfg.checkpoint_dir.is_some() {
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
    // The run folder must not hold any input (dataset or config file).
    check_outputs(&cfg, a.config.as_deref())?;
    // Every case read, checked and preprocessed before anything is written.
    let t0 = Instant::now();
    let (cases, cache_dir, fresh) = own::load(&cfg.out, &ds, &split, &own)?;
    println!(
        "{} cases {} in {:.1} s",
        cases.len(),
        if fresh {
            "preprocessed"
        } else {
            "read from the cache"
        },
        t0.elapsed().as_secs_f64()
    );
    let (train, val) = own::sets(&cfg, &split, &cases)?;
    // The run checks the patch against the adapter before it creates its folder; the plan,
    // the split and the cache follow it (a resumed run reads the last two).
    let mut run = Run::with_data(&gpu, cfg, train, Some(val))?;
    plan.write(&run.cfg.out)?;
    split.write(&run.cfg.out)?;
    if fresh {
        own::write_cache(&cache_dir, &cases)?;
    }
    drop(cases);
    let summary = run.train()?;
    print_summary(&run.cfg, &summary);
    Ok(())
}

/// The training configuration stored in a checkpoint, when it is an own-data one.
pub fn checkpoint_config(path: &Path) -> Result<Option<TrainConfig>> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::file(path, format!("cannot read checkpoint: {e}")))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::file(path, format!("bad safetensors header: {e}")))?;
    let Some(text) = meta.metadata().as_ref().and_then(|m| m.get(META_CONFIG)) else {
        return Ok(None);
    };
    let mut table = text
        .parse::<toml::Table>()
        .map_err(|e| Error::file(path, format!("bad {META_CONFIG} metadata: {e}")))?;
    if !table.contains_key("own") {
        return Ok(None);
    }
    // A checkpoint stores no output folder; prediction writes none of the run's files.
    let dir = path.parent().unwrap_or(Path::new("."));
    table.insert(
        "out".into(),
        toml::Value::String(dir.to_string_lossy().into_owned()),
    );
    Ok(Some(TrainConfig::from_table(
        table,
        Some(&path.display().to_string()),
    )?))
}

/// The inputs of an own-data prediction: NIfTI files only; when every file name has a
/// channel suffix, only the trained channel's, with the suffix dropped from the case id.
pub fn own_inputs(input: &Path, channel: usize) -> Result<Vec<Input>> {
    let all = collect_inputs(input)?;
    if let Some(h5) = all.iter().find(|i| !nifti_name(&i.path)) {
        return Err(Error::file(
            &h5.path,
            "a model trained on own data reads NIfTI scans (.nii.gz, .nii) only",
        ));
    }
    if all.iter().all(|i| split_channel(&i.case).1.is_some()) {
        let kept: Vec<Input> = all
            .iter()
            .filter(|i| split_channel(&i.case).1 == Some(channel))
            .map(|i| Input {
                case: split_channel(&i.case).0.to_string(),
                path: i.path.clone(),
            })
            .collect();
        if kept.is_empty() {
            return Err(Error::file(
                input,
                format!("no scan of channel {channel} (<case>_{channel:04}.nii.gz) here"),
            ));
        }
        return Ok(kept);
    }
    Ok(all)
}

fn nifti_name(p: &Path) -> bool {
    let n = p.file_name().unwrap_or_default().to_string_lossy();
    layout::nii_stem(&n).is_some()
}

/// Read a scan as the model's channel: a 4-D file gives its `channel`-th volume.
fn read_scan(path: &Path, channel: usize) -> Result<Volume> {
    let h = ::nifti::NiftiHeader::from_file(path)
        .map_err(|e| Error::file(path, format!("cannot read the NIfTI header: {e}")))?;
    if h.dim[0] >= 4 && h.dim[4] > 1 {
        layout::read_volume_of_4d(path, channel)
    } else {
        nifti::read(path)
    }
}

/// `ssnet predict` with an own-data checkpoint (module docs).
pub fn predict(a: &PredictArgs, model: &Model, cfg: &TrainConfig, gpu: &Arc<Gpu>) -> Result<()> {
    let own = cfg
        .own
        .as_ref()
        .ok_or_else(|| Error::file(&a.checkpoint, "not an own-data checkpoint"))?;
    let inputs = own_inputs(&a.input, own.channel)?;
    let writes = Writes {
        inputs: inputs
            .iter()
            .map(|i| i.path.clone())
            .chain([a.checkpoint.clone()])
            .collect(),
        writes: inputs
            .iter()
            .map(|i| a.output.join(format!("{}.nii.gz", i.case)))
            .collect(),
        write_dirs: vec![],
        flag: "--output",
    };
    refuse_overwriting_inputs(&writes)?;
    if let Some(note) = shared_folder_note(&writes) {
        println!("{note}");
    }
    std::fs::create_dir_all(&a.output)
        .map_err(|e| Error::file(&a.output, format!("cannot create output folder: {e}")))?;
    println!(
        "{} ({}, {} classes: {}) on {}: {} case(s), preprocessing {:?}",
        a.checkpoint.display(),
        model.cfg.arch.name(),
        model.cfg.num_classes,
        own.class_names.join(", "),
        gpu.describe(),
        inputs.len(),
        own.preprocessing
    );
    let total = inputs.len();
    for (i, inp) in inputs.iter().enumerate() {
        let t = Instant::now();
        let out = a.output.join(format!("{}.nii.gz", inp.case));
        let n = (|| -> Result<usize> {
            let vol = read_scan(&inp.path, own.channel)?;
            let mut labels = own::predict_scan(model, cfg, &vol)?;
            if a.largest_cc {
                keep_largest_components(&mut labels, &vol.shape_zyx(), model.cfg.num_classes)?;
            }
            nifti::write_labels_with_header(&out, &labels, &vol.header)?;
            Ok(labels.iter().filter(|&&l| l != 0).count())
        })()
        .map_err(naming(&inp.path))?;
        println!(
            "[{}/{total}] {}: {n} foreground voxels, {:.1} s -> {}",
            i + 1,
            inp.case,
            t.elapsed().as_secs_f64(),
            out.display()
        );
    }
    Ok(())
}
