//! `ssnet eval`: metrics of existing predictions (owned by the I/O + metrics work), or of a
//! checkpoint's predictions on a dataset split (see `checkpoint`).
//!
//! ```text
//! ssnet eval --pred PRED_DIR --gt GT_DIR [--list FILE] [--csv FILE] [--classes 1,2,3]
//!            [--spacing voxel|header] [--largest-cc]
//! ssnet eval --checkpoint CKPT --data DIR [--split test] [--save-pred DIR] [--list FILE]
//!            [--csv FILE] [--largest-cc | --no-largest-cc] [--patch ..] [--stride-xy ..]
//!            [--stride-z ..] [--gaussian] [--batch N]
//! ```
//!
//! **Matching rule.** The ground-truth folder defines the cases: when it holds `X_gt.nii.gz`
//! files (the ACDC / SS-Net layout, images `X.nii.gz` beside them), each `X_gt` is the label
//! map of case `X` and the other files are ignored; otherwise every `X.nii.gz` is the label
//! map of case `X`. `--list` restricts the cases to those of a list file (e.g.
//! `splits/test.list`). The prediction of case `X` is the first of `X.nii.gz`, `X.nii`,
//! `X_pred.nii.gz`, `X_pred.nii` (SS-Net's name) in the prediction folder; a case without one
//! is an error naming it, before anything is computed. Prediction and ground truth must have
//! the same dims.
//!
//! **What is computed.** For each class `c` (`--classes`, else every non-zero label found in
//! the ground truth), the medpy metrics of `(pred == c, gt == c)` (Dice, Jaccard, 95HD, ASD =
//! directed pred → gt, plus ASSD and Hausdorff), with SS-Net's rule for a class missing from
//! the prediction (all 0) and NaN distances for a class missing from the ground truth but
//! predicted (see `metrics::binary`). `--spacing voxel` (default, as the paper) gives
//! distances in voxels, `--spacing header` in the ground truth's pixdim units (mm).
//! `--largest-cc` first keeps the largest 26-connected component of each predicted class
//! (SS-Net's LA post-processing). Labels 1, 2, 3 are named RV, Myo, LV (ACDC).
//!
//! **Geometry.** A prediction (or, with `--checkpoint`, a label map) whose affine disagrees
//! with its image's / ground truth's gets a warning: the metrics compare voxel grids.
//! Neither the CSV nor `--save-pred` may write over an input ([`crate::cli::outputs`]).
//!
//! **Output.** A per-case table on stdout, then the mean and the standard deviation over
//! cases (population, numpy's default `ddof=0`) per class and, with several classes, of the
//! per-case mean over classes ("all", how SS-Net reports ACDC). NaN values are left out of the
//! means and counted in a note. The same rows go to a CSV (`--csv`, default
//! `PRED_DIR/metrics.csv`): `case,class,dice,jaccard,hd95,asd,assd,hd`.

use crate::data::dataset::{read_list, ACDC_CLASS_NAMES};
use crate::data::nifti;
use crate::error::{Error, Result};
use crate::metrics::{class_mask, evaluate, largest_component, BinaryMetrics, CONN_26};
use clap::{Args, ValueEnum};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Two affines closer than this at every corner of the grid are the same geometry.
pub const AFFINE_TOL_MM: f64 = 1e-3;

/// Units of the surface distances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SpacingMode {
    /// Voxel units (what SS-Net reports).
    Voxel,
    /// The ground truth's voxel size from its NIfTI header (pixdim), usually mm.
    Header,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Folder of predicted label maps (NIfTI): X.nii.gz, X.nii or X_pred.nii.gz per case.
    #[arg(long, value_name = "DIR")]
    pub pred: Option<PathBuf>,
    /// Folder of ground-truth label maps: X_gt.nii.gz (images X.nii.gz beside are ignored), else X.nii.gz.
    #[arg(long, value_name = "DIR")]
    pub gt: Option<PathBuf>,
    /// Only the cases of this list file (one name per line, e.g. splits/test.list).
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// Where to write the CSV (default: PRED_DIR/metrics.csv).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Classes to score, comma-separated (default: every non-zero label in the ground truth).
    #[arg(long, value_delimiter = ',', value_name = "C,C,...")]
    pub classes: Option<Vec<u8>>,
    /// Units of 95HD / ASD: voxel (as the paper) or header (the ground truth's pixdim, mm).
    #[arg(long, value_enum, default_value = "voxel")]
    pub spacing: SpacingMode,
    /// Keep only the largest 26-connected component of each predicted class before scoring
    /// (the default with --checkpoint on an LA dataset, SS-Net's nms).
    #[arg(long)]
    pub largest_cc: bool,
    /// With --checkpoint: do not keep the largest component (on by default for LA).
    #[arg(long, conflicts_with = "largest_cc")]
    pub no_largest_cc: bool,
    /// Predict with this checkpoint (instead of --pred/--gt) on the --split of --data.
    #[arg(long, value_name = "CKPT", conflicts_with_all = ["pred", "gt"])]
    pub checkpoint: Option<PathBuf>,
    /// Dataset root for --checkpoint: the LA layout (train.list, test.list,
    /// `2018LA_Seg_Training Set/<ID>/mri_norm2.h5`), the ACDC layout (`splits/<split>.list`,
    /// `<split>/<case>.nii.gz` + `<case>_gt.nii.gz`) or a folder of X.nii.gz + X_gt.nii.gz.
    #[arg(long, value_name = "DIR", requires = "checkpoint")]
    pub data: Option<PathBuf>,
    /// Split to evaluate with --checkpoint: test, val (ACDC) or train. --list overrides it.
    #[arg(long, default_value = "test", value_name = "SPLIT")]
    pub split: String,
    /// With --checkpoint: also write each prediction as `DIR/<case>.nii.gz` (and the CSV as
    /// DIR/metrics.csv unless --csv).
    #[arg(long, value_name = "DIR", requires = "checkpoint")]
    pub save_pred: Option<PathBuf>,
    #[command(flatten)]
    pub infer: crate::cli::predict::InferArgs,
}

pub fn run(a: EvalArgs, device: Option<&str>) -> Result<()> {
    if let Some(ckpt) = a.checkpoint.clone() {
        return checkpoint::run(&a, &ckpt, device);
    }
    let pred_dir = a.pred.clone().ok_or_else(|| {
        Error::config("eval: --pred DIR (the folder of predicted NIfTI label maps) is required, or --checkpoint CKPT --data DIR")
    })?;
    let gt_dir = a.gt.clone().ok_or_else(|| {
        Error::config("eval: --gt DIR (the folder of ground-truth NIfTI label maps) is required")
    })?;
    // An own dataset's root (Decathlon, nnU-Net v2, plain): its label folder.
    let gt_dir = crate::data::layout::label_folder(&gt_dir).unwrap_or(gt_dir);
    let csv = a
        .csv
        .clone()
        .unwrap_or_else(|| pred_dir.join("metrics.csv"));
    let mut inputs = crate::cli::outputs::volumes_below(&gt_dir, 0);
    inputs.extend(crate::cli::outputs::volumes_below(&pred_dir, 0));
    inputs.extend(a.list.clone());
    let plan = crate::cli::outputs::Plan {
        inputs,
        writes: vec![csv.clone()],
        write_dirs: vec![],
        flag: "--csv",
    };
    crate::cli::outputs::refuse_overwriting_inputs(&plan)?;
    let report = evaluate_folders(&pred_dir, &gt_dir, &a)?;
    if let Some(note) = crate::cli::outputs::shared_folder_note(&plan) {
        println!("{note}");
    }
    print!("{}", report.table());
    std::fs::write(&csv, report.csv())
        .map_err(|e| Error::file(&csv, format!("cannot write CSV: {e}")))?;
    println!("wrote {}", csv.display());
    Ok(())
}

/// The metrics of every case and class.
pub struct Report {
    /// Class labels scored, and their display names.
    pub classes: Vec<(u8, String)>,
    /// Per case: its name and one result per class (same order as `classes`).
    pub cases: Vec<(String, Vec<BinaryMetrics>)>,
    /// "voxel" or "header".
    pub units: &'static str,
    pub largest_cc: bool,
}

/// A ground-truth file and its case name.
struct GtCase {
    case: String,
    path: PathBuf,
}

fn nii_stem(name: &str) -> Option<&str> {
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
}

/// The cases of the ground-truth folder (module docs), sorted, restricted to `list`.
fn gt_cases(gt_dir: &Path, list: Option<&Path>) -> Result<Vec<GtCase>> {
    let rd = std::fs::read_dir(gt_dir)
        .map_err(|e| Error::file(gt_dir, format!("cannot read ground-truth folder: {e}")))?;
    let mut plain = Vec::new();
    let mut with_gt = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(stem) = nii_stem(&name) else {
            continue;
        };
        match stem.strip_suffix("_gt") {
            Some(case) => with_gt.push(GtCase {
                case: case.to_string(),
                path: e.path(),
            }),
            None => plain.push(GtCase {
                case: stem.to_string(),
                path: e.path(),
            }),
        }
    }
    let mut cases = if with_gt.is_empty() { plain } else { with_gt };
    // X.nii.gz and X.nii both present: keep the first in name order (.nii before .nii.gz).
    cases.sort_by(|a, b| a.case.cmp(&b.case).then(a.path.cmp(&b.path)));
    cases.dedup_by(|a, b| a.case == b.case);
    if let Some(list) = list {
        let mut keep = Vec::new();
        for id in read_list(list)? {
            match cases.iter().position(|c| c.case == id) {
                Some(i) => keep.push(GtCase {
                    case: id,
                    path: cases[i].path.clone(),
                }),
                None => {
                    return Err(Error::file(
                        list,
                        format!(
                        "case '{id}' has no ground truth in {} (no {id}_gt.nii.gz or {id}.nii.gz)",
                        gt_dir.display()
                    ),
                    ))
                }
            }
        }
        cases = keep;
    }
    if cases.is_empty() {
        return Err(Error::file(
            gt_dir,
            "no ground-truth label maps (X_gt.nii.gz or X.nii.gz) in this folder",
        ));
    }
    Ok(cases)
}

/// The prediction file of `case`, or an error naming the case.
fn pred_file(pred_dir: &Path, case: &str) -> Result<PathBuf> {
    for name in [
        format!("{case}.nii.gz"),
        format!("{case}.nii"),
        format!("{case}_pred.nii.gz"),
        format!("{case}_pred.nii"),
    ] {
        let p = pred_dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::file(pred_dir, format!("no prediction for case '{case}' (expected {case}.nii.gz, {case}.nii or {case}_pred.nii.gz)")))
}

/// Evaluate every case of `gt_dir` against its prediction in `pred_dir`.
pub fn evaluate_folders(pred_dir: &Path, gt_dir: &Path, a: &EvalArgs) -> Result<Report> {
    if !pred_dir.is_dir() {
        return Err(Error::file(pred_dir, "prediction folder not found"));
    }
    let cases = gt_cases(gt_dir, a.list.as_deref())?;
    // Every prediction must exist before anything is computed.
    let preds: Vec<PathBuf> = cases
        .iter()
        .map(|c| pred_file(pred_dir, &c.case))
        .collect::<Result<_>>()?;
    let mut gts = Vec::with_capacity(cases.len());
    let mut found = BTreeSet::new();
    for c in &cases {
        let mut v = nifti::read(&c.path)?;
        let labels = v.labels()?;
        // Keep the geometry and the labels only: the f32 copy is 4× the label map.
        v.data = Vec::new();
        found.extend(labels.iter().copied().filter(|&l| l != 0));
        gts.push((v, labels));
    }
    let class_ids: Vec<u8> = match &a.classes {
        Some(c) if c.is_empty() || c.contains(&0) => {
            return Err(Error::config(
                "eval: --classes takes non-zero labels, e.g. --classes 1,2,3",
            ))
        }
        Some(c) => c.clone(),
        None => found.into_iter().collect(),
    };
    if class_ids.is_empty() {
        return Err(Error::file(
            gt_dir,
            "the ground truth has no foreground label: nothing to score (give --classes)",
        ));
    }
    let acdc = class_ids == [1, 2, 3];
    let classes: Vec<(u8, String)> = class_ids
        .iter()
        .map(|&c| {
            (
                c,
                if acdc {
                    ACDC_CLASS_NAMES[c as usize - 1].to_string()
                } else {
                    c.to_string()
                },
            )
        })
        .collect();

    let mut results = Vec::with_capacity(cases.len());
    for ((c, pred_path), (gt, gt_labels)) in cases.iter().zip(&preds).zip(&gts) {
        let pv = nifti::read(pred_path)?;
        if pv.dims != gt.dims {
            return Err(Error::file(
                pred_path,
                format!(
                    "prediction dims {:?} differ from the ground truth's {:?} ({})",
                    pv.dims,
                    gt.dims,
                    c.path.display()
                ),
            ));
        }
        if let Some(why) = nifti::affine_mismatch(&pv.affine, &gt.affine, gt.dims, AFFINE_TOL_MM) {
            eprintln!(
                "warning: {} and {}: {why}; the metrics compare voxel grids, as if they were aligned",
                pred_path.display(),
                c.path.display()
            );
        }
        let pred = pv.labels()?;
        let dims = gt.shape_zyx();
        let spacing = match a.spacing {
            SpacingMode::Voxel => None,
            SpacingMode::Header => {
                let s = gt.spacing_zyx();
                if s.iter().any(|&v| !(v.is_finite() && v > 0.0)) {
                    return Err(Error::file(
                        &c.path,
                        format!(
                            "--spacing header: the voxel size {:?} is not positive",
                            gt.spacing
                        ),
                    ));
                }
                Some(s)
            }
        };
        let mut row = Vec::with_capacity(classes.len());
        for &(class, _) in &classes {
            let mut p = class_mask(&pred, class);
            if a.largest_cc {
                p = largest_component(&p, &dims, CONN_26)?;
            }
            let g = class_mask(gt_labels, class);
            let m = evaluate(&p, &g, &dims, spacing.as_ref().map(|s| &s[..]))
                .map_err(|e| Error::file(pred_path, e))?;
            row.push(m);
        }
        results.push((c.case.clone(), row));
    }
    Ok(Report {
        classes,
        cases: results,
        units: if a.spacing == SpacingMode::Voxel {
            "voxel"
        } else {
            "header"
        },
        largest_cc: a.largest_cc,
    })
}

/// Mean and population standard deviation of the non-NaN values, and how many were NaN.
fn mean_std(v: impl Iterator<Item = f64>) -> (f64, f64, usize) {
    let (mut vals, mut nan) = (Vec::new(), 0usize);
    for x in v {
        if x.is_nan() {
            nan += 1;
        } else {
            vals.push(x);
        }
    }
    if vals.is_empty() {
        return (f64::NAN, f64::NAN, nan);
    }
    let n = vals.len() as f64;
    let mean = vals.iter().sum::<f64>() / n;
    let var = vals.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt(), nan)
}

/// One summary row: (label, class name, values).
type SummaryRow = (&'static str, String, [f64; 6]);

impl Report {
    /// Mean and std per class and, with several classes, of the per-case class mean; and the
    /// number of NaN values left out.
    pub fn summary(&self) -> (Vec<SummaryRow>, usize) {
        let mut rows = Vec::new();
        let mut skipped = 0;
        let mut push = |name: String, per_case: &dyn Fn(usize, usize) -> f64| {
            let (mut mean, mut std) = ([0.0; 6], [0.0; 6]);
            for k in 0..6 {
                let (m, s, nan) = mean_std((0..self.cases.len()).map(|i| per_case(i, k)));
                mean[k] = m;
                std[k] = s;
                skipped += nan;
            }
            rows.push(("mean", name.clone(), mean));
            rows.push(("std", name, std));
        };
        for (j, (_, name)) in self.classes.iter().enumerate() {
            push(name.clone(), &|i, k| self.cases[i].1[j].values()[k]);
        }
        if self.classes.len() > 1 {
            // The per-case mean over classes (NaN classes left out of it).
            push("all".to_string(), &|i, k| {
                mean_std(self.cases[i].1.iter().map(|m| m.values()[k])).0
            });
        }
        (rows, skipped)
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let w = self
            .cases
            .iter()
            .map(|c| c.0.len())
            .max()
            .unwrap_or(4)
            .max(6);
        let units = if self.units == "voxel" {
            "distances in voxels"
        } else {
            "distances in header units (mm)"
        };
        let _ = writeln!(
            s,
            "{} cases, {}{}",
            self.cases.len(),
            units,
            if self.largest_cc {
                ", largest connected component kept"
            } else {
                ""
            }
        );
        let _ = write!(s, "{:<w$}  {:<6}", "case", "class");
        for n in BinaryMetrics::NAMES {
            let _ = write!(s, " {n:>9}");
        }
        s.push('\n');
        for (case, row) in &self.cases {
            for ((_, name), m) in self.classes.iter().zip(row) {
                let _ = write!(s, "{case:<w$}  {name:<6}");
                for v in m.values() {
                    let _ = write!(s, " {v:>9.4}");
                }
                s.push('\n');
            }
        }
        let (rows, skipped) = self.summary();
        for (label, name, vals) in &rows {
            let _ = write!(s, "{label:<w$}  {name:<6}");
            for v in vals {
                let _ = write!(s, " {v:>9.4}");
            }
            s.push('\n');
        }
        if skipped > 0 {
            let _ = writeln!(s, "note: {skipped} NaN values (a class predicted but absent from the ground truth) are left out of the means");
        }
        s
    }

    /// The CSV: per-case rows, then the summary rows.
    pub fn csv(&self) -> String {
        let mut s = String::from("case,class,dice,jaccard,hd95,asd,assd,hd\n");
        let fmt = |v: f64| {
            if v.is_nan() {
                "nan".to_string()
            } else {
                format!("{v}")
            }
        };
        for (case, row) in &self.cases {
            for ((_, name), m) in self.classes.iter().zip(row) {
                let vals: Vec<String> = m.values().iter().map(|&v| fmt(v)).collect();
                let _ = writeln!(s, "{case},{name},{}", vals.join(","));
            }
        }
        for (label, name, vals) in self.summary().0 {
            let vals: Vec<String> = vals.iter().map(|&v| fmt(v)).collect();
            let _ = writeln!(s, "{label},{name},{}", vals.join(","));
        }
        s
    }
}

/// `ssnet eval --checkpoint CKPT --data DIR [--split test] [--save-pred DIR]`: predict every
/// case of a dataset split with a checkpoint, then score it as SS-Net's test scripts do.
///
/// - LA layout (VNet): the sliding window (`--patch 112,112,80 --stride-xy 18 --stride-z 4`),
///   the largest 26-connected component kept (SS-Net's `--nms 1`; `--no-largest-cc` turns it
///   off), Dice / Jaccard / 95HD / ASD of the left atrium per case and their mean
///   (`test_LA.py`).
/// - ACDC layout (UNet): slice-wise at 256×256, per class RV / Myo / LV per case, the mean
///   per class and the mean over classes (`test_ACDC.py`).
/// - A folder of `X.nii.gz` + `X_gt.nii.gz` (either network): every labelled case.
///
/// Distances in voxels by default (`--spacing header`: LA 0.625 mm, NIfTI pixdim). The table
/// and CSV are [`Report`]'s, as for `--pred/--gt`.
mod checkpoint {
    use super::{EvalArgs, Report, SpacingMode};
    use crate::cli::outputs::{refuse_overwriting_inputs, shared_folder_note, Plan};
    use crate::cli::predict::{describe, keep_largest_components};
    use crate::data::dataset::{
        read_list, AcdcDataset, Case, FolderDataset, LaDataset, Split, ACDC_CLASS_NAMES,
        LA_IMAGE_DIR, LA_SPACING_MM,
    };
    use crate::data::nifti::{self, xyz_to_zyx, zyx_to_xyz, Volume};
    use crate::error::{Error, Result};
    use crate::gpu::Gpu;
    use crate::infer::predict_volume;
    use crate::metrics::{class_mask, evaluate};
    use crate::nn::{Arch, Model};
    use std::path::Path;
    use std::time::Instant;

    enum Layout {
        La(LaDataset),
        Acdc(AcdcDataset),
        Folder,
    }

    impl Layout {
        fn name(&self) -> &'static str {
            match self {
                Layout::La(_) => "LA",
                Layout::Acdc(_) => "ACDC",
                Layout::Folder => "folder",
            }
        }
    }

    /// The layout of `root` (opened and checked, except a plain folder, whose label range
    /// depends on the model) and the cases to evaluate.
    fn open(
        root: &Path,
        split: &str,
        list: Option<&Path>,
    ) -> Result<(Layout, Option<Vec<String>>)> {
        if !root.is_dir() {
            return Err(Error::file(root, "dataset folder not found"));
        }
        let listed = list.map(read_list).transpose()?;
        if root.join("splits").is_dir() {
            let ds = AcdcDataset::open(root)?;
            let split = match split {
                "train" => Split::Train,
                "val" => Split::Val,
                "test" => Split::Test,
                s => {
                    return Err(Error::config(format!(
                        "eval: --split '{s}': an ACDC dataset has train, val and test"
                    )))
                }
            };
            let cases = listed.unwrap_or_else(|| ds.cases(split).to_vec());
            for c in &cases {
                ds.paths(c)?;
            }
            return Ok((Layout::Acdc(ds), Some(cases)));
        }
        if root.join(LA_IMAGE_DIR).is_dir()
            && (root.join("test.list").is_file() || root.join("train.list").is_file())
        {
            let ds = LaDataset::open(root)?;
            let cases = match (listed, split) {
                (Some(l), _) => l,
                (None, "test") => ds.test.clone(),
                (None, "train") => ds.train.clone(),
                (None, s) => {
                    return Err(Error::config(format!(
                        "eval: --split '{s}': an LA dataset has train and test"
                    )))
                }
            };
            for c in &cases {
                if !ds.h5_path(c).is_file() {
                    return Err(Error::file(ds.h5_path(c), format!("case '{c}' not found")));
                }
            }
            return Ok((Layout::La(ds), Some(cases)));
        }
        Ok((Layout::Folder, listed))
    }

    pub fn run(a: &EvalArgs, ckpt: &Path, device: Option<&str>) -> Result<()> {
        let root = a.data.clone().ok_or_else(|| Error::config("eval: --checkpoint needs --data DIR (an LA or ACDC dataset root, or a folder of X.nii.gz + X_gt.nii.gz)"))?;
        let (layout, cases) = open(&root, &a.split, a.list.as_deref())?;
        crate::nn::checkpoint::check_file(ckpt)?;
        let gpu = Gpu::new(device)?;
        let model = Model::load(&gpu, ckpt)?;
        let arch = model.cfg.arch;
        let num_classes = model.cfg.num_classes;
        match (&layout, arch) {
            (Layout::La(_), Arch::UNet) => {
                return Err(Error::file(ckpt, format!("a unet (2D) checkpoint cannot segment the LA volumes of {}: it needs a vnet", root.display())))
            }
            (Layout::Acdc(_), Arch::VNet) => {
                return Err(Error::file(ckpt, format!("a vnet (3D) checkpoint on the ACDC slices of {}: SS-Net evaluates ACDC with a unet", root.display())))
            }
            _ => {}
        }
        let folder = match layout {
            Layout::Folder => Some(FolderDataset::open(
                &root,
                u8::try_from(num_classes).unwrap_or(u8::MAX),
            )?),
            _ => None,
        };
        let cases = match (&folder, cases) {
            (Some(f), Some(c)) => {
                f.check_list(a.list.as_deref().unwrap_or(&root), &c)?;
                c
            }
            (Some(f), None) => f.cases.clone(),
            (None, c) => c.unwrap_or_default(),
        };
        if cases.is_empty() {
            return Err(Error::file(
                &root,
                format!("no cases to evaluate (split '{}')", a.split),
            ));
        }
        let class_ids: Vec<u8> = match (&a.classes, &layout) {
            (Some(c), _) if c.is_empty() || c.contains(&0) => {
                return Err(Error::config(
                    "eval: --classes takes non-zero labels, e.g. --classes 1,2,3",
                ))
            }
            (Some(c), _) => c.clone(),
            (None, Layout::La(_)) => vec![1],
            (None, Layout::Acdc(_)) => vec![1, 2, 3],
            (None, Layout::Folder) => (1..num_classes as u8).collect(),
        };
        if let Some(&c) = class_ids.iter().find(|&&c| c as usize >= num_classes) {
            return Err(Error::file(
                ckpt,
                format!("the model predicts {num_classes} classes, class {c} cannot be scored"),
            ));
        }
        let classes: Vec<(u8, String)> = class_ids
            .iter()
            .map(|&c| {
                let name = match &layout {
                    Layout::La(_) if c == 1 => "LA".to_string(),
                    Layout::Acdc(_) if (1..=3).contains(&c) => {
                        ACDC_CLASS_NAMES[c as usize - 1].to_string()
                    }
                    _ => c.to_string(),
                };
                (c, name)
            })
            .collect();
        let largest_cc = a.largest_cc || (!a.no_largest_cc && matches!(layout, Layout::La(_)));
        let cfg = a.infer.config(arch)?;
        crate::cli::predict::check_infer_sizes(&gpu, arch, &cfg)?;
        // Every input (images, labels, list, checkpoint) against every planned write.
        let mut inputs = vec![ckpt.to_path_buf()];
        inputs.extend(a.list.clone());
        let mut pairs = Vec::new();
        for id in &cases {
            let (img, lab) = match (&layout, &folder) {
                (Layout::La(ds), _) => (ds.h5_path(id), ds.h5_path(id)),
                (Layout::Acdc(ds), _) => ds.paths(id)?,
                (_, Some(f)) => f.paths(id),
                _ => unreachable!("a folder layout is opened above"),
            };
            inputs.extend([img.clone(), lab.clone()]);
            pairs.push((img, lab));
        }
        let csv = a
            .csv
            .clone()
            .or_else(|| a.save_pred.as_ref().map(|d| d.join("metrics.csv")));
        let mut writes: Vec<std::path::PathBuf> = csv.iter().cloned().collect();
        if let Some(d) = &a.save_pred {
            writes.extend(cases.iter().map(|id| d.join(format!("{id}.nii.gz"))));
        }
        let plan = Plan {
            inputs,
            writes,
            write_dirs: vec![],
            flag: "--save-pred / --csv",
        };
        refuse_overwriting_inputs(&plan)?;
        if let Some(note) = shared_folder_note(&plan) {
            println!("{note}");
        }
        // Image and label disagreeing in space: the metrics are still computed on the voxel
        // grid, say so.
        for (img, lab) in pairs.iter().filter(|(i, l)| i != l) {
            let (hi, hl) = (nifti::read_header(img)?, nifti::read_header(lab)?);
            let dims = [hi.dim[1] as usize, hi.dim[2] as usize, hi.dim[3] as usize];
            if let Some(why) = nifti::affine_mismatch(
                &nifti::affine_of(&hi),
                &nifti::affine_of(&hl),
                dims,
                super::AFFINE_TOL_MM,
            ) {
                eprintln!(
                    "warning: {} and {}: {why}; the metrics compare voxel grids, as if they were aligned",
                    img.display(),
                    lab.display()
                );
            }
        }
        if let Some(d) = &a.save_pred {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::file(d, format!("cannot create folder: {e}")))?;
        }
        println!(
            "{} ({}, {num_classes} classes) on {} {} '{}': {} case(s), {}{}",
            ckpt.display(),
            arch.name(),
            layout.name(),
            root.display(),
            a.split,
            cases.len(),
            describe(arch, &cfg),
            if largest_cc {
                ", largest connected component"
            } else {
                ""
            }
        );
        let total = cases.len();
        let mut results = Vec::with_capacity(total);
        for (i, id) in cases.iter().enumerate() {
            let t = Instant::now();
            let case: Case = match (&layout, &folder) {
                (Layout::La(ds), _) => ds.load(id)?,
                (Layout::Acdc(ds), _) => ds.load(id)?,
                (_, Some(f)) => f.load(id)?,
                _ => unreachable!("a folder layout is opened above"),
            };
            let named = crate::cli::predict::naming(&case.image_path);
            // Case arrays are LA [X, Y, Z] or NIfTI [z][y][x]; a VNet wants [X, Y, Z].
            let h5 = matches!(layout, Layout::La(_));
            let to_xyz = arch == Arch::VNet && !h5;
            let (image, shape) = if to_xyz {
                let [z, y, x] = case.shape;
                (zyx_to_xyz(&case.image, case.shape), [x, y, z])
            } else {
                (case.image.clone(), case.shape)
            };
            let pred = predict_volume(&model, &image, shape, &cfg, false).map_err(&named)?;
            let mut labels = pred.labels;
            if largest_cc {
                keep_largest_components(&mut labels, &shape, num_classes).map_err(&named)?;
            }
            // Back to the case's own order.
            let labels = if to_xyz {
                xyz_to_zyx(&labels, shape)
            } else {
                labels
            };
            let dims = case.shape;
            let spacing = match a.spacing {
                SpacingMode::Voxel => None,
                SpacingMode::Header => Some(case.spacing.unwrap_or([LA_SPACING_MM; 3])),
            };
            let mut row = Vec::with_capacity(classes.len());
            for &(c, _) in &classes {
                let p = class_mask(&labels, c);
                let g = class_mask(&case.label, c);
                row.push(
                    evaluate(&p, &g, &dims, spacing.as_ref().map(|s| &s[..])).map_err(&named)?,
                );
            }
            if let Some(d) = &a.save_pred {
                let out = d.join(format!("{id}.nii.gz"));
                match &case.header {
                    Some(h) => nifti::write_labels_with_header(&out, &labels, h)?,
                    None => {
                        // LA h5: NIfTI dims [X, Y, Z], identity orientation, 0.625 mm.
                        let zyx = xyz_to_zyx(&labels, dims);
                        let v = Volume::new(
                            zyx.iter().map(|&l| l as f32).collect(),
                            dims,
                            [LA_SPACING_MM; 3],
                        )
                        .map_err(|e| Error::file(&out, e))?;
                        nifti::write_labels(&out, &zyx, &v)?;
                    }
                }
            }
            let dice: Vec<String> = classes
                .iter()
                .zip(&row)
                .map(|((_, n), m)| format!("{n} {:.4}", m.dice))
                .collect();
            println!(
                "[{}/{total}] {id} {dims:?}: Dice {} ({:.1} s)",
                i + 1,
                dice.join(", "),
                t.elapsed().as_secs_f64()
            );
            results.push((id.clone(), row));
        }
        let report = Report {
            classes,
            cases: results,
            units: if a.spacing == SpacingMode::Voxel {
                "voxel"
            } else {
                "header"
            },
            largest_cc,
        };
        print!("{}", report.table());
        if let Some(csv) = csv {
            std::fs::write(&csv, report.csv())
                .map_err(|e| Error::file(&csv, format!("cannot write CSV: {e}")))?;
            println!("wrote {}", csv.display());
        }
        Ok(())
    }
}
