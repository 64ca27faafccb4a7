//! Training on a user's own dataset: the preprocessed cases of a run (read from the run's
//! cache, else preprocessed in parallel and checked), turned into the same [`TrainSet`] and
//! validation [`Case`]s the LA and ACDC layouts give, so the training loop is shared; and the
//! prediction of a new scan with the preprocessing a checkpoint was trained with.
//!
//! Arrays: a VNet (3D) trains on `[X, Y, Z]` volumes (as LA), a UNet (2D) on the `[H, W]`
//! slices along canonical z (as ACDC); labelled items first, then unlabelled.

use super::config::TrainConfig;
use super::data::{Item, TrainSet};
use super::plan::OwnData;
use crate::data::dataset::Case;
use crate::data::layout::{read, OpenOptions, OwnDataset, Split};
use crate::data::nifti::{self, Volume};
use crate::data::preprocess::{self, cache, Prepared};
use crate::error::{Error, Result};
use crate::infer::predict_volume;
use crate::nn::{Arch, Model};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The preprocessed cases of a run, by id.
pub type Cases = BTreeMap<String, Prepared>;

/// Open the dataset of an own-data configuration.
pub fn open_dataset(cfg: &TrainConfig, own: &OwnData) -> Result<OwnDataset> {
    OwnDataset::open(
        &cfg.data,
        &OpenOptions {
            channel: Some(own.channel),
            unlabelled: own.unlabelled.clone(),
        },
    )
}

fn ids(split: &Split) -> impl Iterator<Item = &String> {
    split
        .labelled
        .iter()
        .chain(&split.unlabelled)
        .chain(&split.validation)
}

/// The cache fingerprint of a split's files and the preprocessing.
pub fn fingerprint(ds: &OwnDataset, split: &Split, own: &OwnData) -> Result<String> {
    let mut files: Vec<&Path> = Vec::new();
    for id in ids(split) {
        let c = ds
            .case(id)
            .ok_or_else(|| Error::msg(format!("no case '{id}'")))?;
        files.push(&c.image);
        if let Some(l) = &c.label {
            files.push(l);
        }
    }
    let settings = serde_json::json!({
        "channel": own.channel,
        "preprocessing": own.preprocessing,
        "labels": ds.labels,
    })
    .to_string();
    cache::fingerprint(&files, &settings)
}

/// Read and preprocess every case of `split` in parallel, each checked
/// ([`read::read_case`]); warnings are printed. Unlabelled cases keep no label.
pub fn preprocess_all(ds: &OwnDataset, split: &Split, own: &OwnData) -> Result<Cases> {
    let labelled: std::collections::BTreeSet<&String> =
        split.labelled.iter().chain(&split.validation).collect();
    let ids: Vec<&String> = ids(split).collect();
    let out: Vec<(String, Prepared)> = ids
        .par_iter()
        .map(|id| {
            let c = ds
                .case(id)
                .ok_or_else(|| Error::msg(format!("no case '{id}'")))?;
            let mut c = c.clone();
            if !labelled.contains(id) {
                c.label = None; // labelled cases moved to the unlabelled stream
            }
            let pair = read::read_case(&c, ds.labels.as_ref())?;
            if let Some(l) = &pair.label {
                if let Some(&m) = l.iter().max() {
                    if m as usize >= own.num_classes {
                        return Err(Error::file(
                            c.label.as_ref().unwrap_or(&c.image),
                            format!("label value {m} but the plan has {} classes: re-plan (a new --out) or fix the label map", own.num_classes),
                        ));
                    }
                }
            }
            for w in &pair.warnings {
                eprintln!("{w}");
            }
            let p = preprocess::prepare(&pair.image, pair.label.as_deref(), &own.preprocessing)?;
            Ok(((*id).clone(), p))
        })
        .collect::<Result<_>>()?;
    Ok(out.into_iter().collect())
}

/// The cases of a run: its cache when complete, else preprocessed (and `true`: to be cached
/// with [`write_cache`] once the run folder may be written).
pub fn load(
    run: &Path,
    ds: &OwnDataset,
    split: &Split,
    own: &OwnData,
) -> Result<(Cases, PathBuf, bool)> {
    let dir = cache::folder(run, &fingerprint(ds, split, own)?);
    if cache::is_complete(&dir) {
        let ids: Vec<&String> = ids(split).collect();
        let out: Vec<(String, Prepared)> = ids
            .par_iter()
            .map(|id| Ok(((*id).clone(), cache::read_case(&dir, id)?)))
            .collect::<Result<_>>()?;
        return Ok((out.into_iter().collect(), dir, false));
    }
    Ok((preprocess_all(ds, split, own)?, dir, true))
}

/// Write the cases to the cache folder `dir`.
pub fn write_cache(dir: &Path, cases: &Cases) -> Result<()> {
    cache::write_all(dir, cases.iter().map(|(k, v)| (k.as_str(), v)))
}

/// The array of a preprocessed case in the network's order: VNet `[X, Y, Z]`, UNet
/// `[z][y][x]` (slices first).
fn net_order<T: Copy>(arch: Arch, v: &[T], shape: [usize; 3]) -> (Vec<T>, [usize; 3]) {
    match arch {
        Arch::VNet => (nifti::zyx_to_xyz(v, shape), [shape[2], shape[1], shape[0]]),
        Arch::UNet => (v.to_vec(), shape),
    }
}

/// The training set and the validation cases of a run from its preprocessed cases.
pub fn sets(cfg: &TrainConfig, split: &Split, cases: &Cases) -> Result<(TrainSet, Vec<Case>)> {
    let arch = cfg.dataset.arch();
    let mut items = Vec::new();
    let mut labelled_items = 0;
    for (stream, labelled) in [(&split.labelled, true), (&split.unlabelled, false)] {
        for id in stream {
            let p = &cases[id];
            let shape = p.geometry.shape;
            let label = p
                .label
                .clone()
                .filter(|_| labelled)
                .unwrap_or_else(|| vec![0; p.image.len()]);
            let (img, s) = net_order(arch, &p.image, shape);
            let (lab, _) = net_order(arch, &label, shape);
            match arch {
                Arch::VNet => items.push(Item {
                    image: img,
                    label: lab,
                    shape: s.to_vec(),
                }),
                Arch::UNet => {
                    let hw = s[1] * s[2];
                    for k in 0..s[0] {
                        items.push(Item {
                            image: img[k * hw..(k + 1) * hw].to_vec(),
                            label: lab[k * hw..(k + 1) * hw].to_vec(),
                            shape: vec![s[1], s[2]],
                        });
                    }
                }
            }
            if labelled {
                labelled_items = items.len();
            }
        }
    }
    let n = items.len();
    let mut set = TrainSet::from_items(cfg.dataset, items, labelled_items)?;
    set.describe = match arch {
        Arch::VNet => format!("{} of {n} scans", split.labelled.len()),
        Arch::UNet => format!(
            "{labelled_items} of {n} slices ({} of {} scans)",
            split.labelled.len(),
            split.labelled.len() + split.unlabelled.len()
        ),
    };
    let val = split
        .validation
        .iter()
        .map(|id| {
            let p = &cases[id];
            let (image, shape) = net_order(arch, &p.image, p.geometry.shape);
            let label = p.label.clone().unwrap_or_else(|| vec![0; image.len()]);
            let (label, _) = net_order(arch, &label, p.geometry.shape);
            let path = cfg.data.join(id);
            Case {
                id: id.clone(),
                image,
                label,
                shape,
                spacing: Some(p.spacing),
                image_path: path.clone(),
                label_path: path,
                header: None,
            }
        })
        .collect();
    Ok((set, val))
}

fn own_of(cfg: &TrainConfig) -> Result<&OwnData> {
    cfg.own
        .as_ref()
        .ok_or_else(|| Error::config("not an own-data configuration (no [own] section)"))
}

/// The training set and validation cases of an existing own-data run (resume): the split of
/// its `splits.json`, the cases from its cache (rebuilt when the inputs changed).
pub fn open_run(cfg: &TrainConfig) -> Result<(TrainSet, Vec<Case>)> {
    let own = own_of(cfg)?;
    let ds = open_dataset(cfg, own)?;
    let split = Split::read(&cfg.out, &ds)?;
    let (cases, dir, fresh) = load(&cfg.out, &ds, &split, own)?;
    if fresh {
        write_cache(&dir, &cases)?;
    }
    sets(cfg, &split, &cases)
}

/// Segment one scan with a model trained on own data: preprocess it as the training scans,
/// predict, map the labels back onto the scan's voxels (`[z][y][x]` of its dims), to be
/// written with the scan's own header.
pub fn predict_scan(model: &Model, cfg: &TrainConfig, vol: &Volume) -> Result<Vec<u8>> {
    let own = own_of(cfg)?;
    let bad = vol.data.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(Error::file(
            &vol.path,
            format!("{bad} NaN or infinite voxels"),
        ));
    }
    let p = preprocess::prepare(vol, None, &own.preprocessing)?;
    let arch = model.cfg.arch;
    let (image, shape) = net_order(arch, &p.image, p.geometry.shape);
    let pred = predict_volume(model, &image, shape, &super::run::infer_config(cfg), false)?;
    let labels = match arch {
        Arch::VNet => nifti::xyz_to_zyx(&pred.labels, shape),
        Arch::UNet => pred.labels,
    };
    preprocess::restore_labels(&labels, &p.geometry).map_err(|e| Error::file(&vol.path, e))
}
