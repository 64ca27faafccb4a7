//! The plan of an own-data run: what the data says about the network, patch, batch and
//! preprocessing, written to `<run>/plan.json` and printed before training (`ssnet plan`
//! prints it alone). Every value can be overridden ([`PlanOptions`], the CLI flags).
//!
//! - target spacing: the median voxel size of the labelled cases, per canonical axis;
//! - network: a 2D UNet on slices when the through-plane (z) spacing is more than 3× the
//!   in-plane one (ACDC's 10 mm vs ~1.5 mm), else a 3D VNet; SS-Net's losses and
//!   hyper-parameters of the matching preset (`acdc` for 2D, `la` for 3D) apply unchanged;
//! - patch: the median shape after resampling (UNet: its y, x), each axis rounded up to a
//!   multiple of 16 (both nets halve four times), then the largest axis shrunk by 16 until
//!   the memory bound holds (see [`MemoryBound`]);
//! - batch: the preset's (3D 2+2, 2D 12+12), each stream at most its number of items (scans in
//!   3D, slices in 2D);
//! - classes: `dataset.json`'s labels (count = largest value + 1, with their names), else
//!   the largest label value seen + 1;
//! - sliding window (3D): stride half the patch (nnU-Net's 0.5 overlap).

use crate::data::layout::{CaseFiles, LayoutKind, OwnDataset, Split};
use crate::data::nifti;
use crate::data::preprocess::{intensity, Intensity, Orientation, Preprocessing};
use crate::error::{Error, Result};
use crate::nn::Arch;
use crate::train::config::Method;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name of the plan in the run folder.
pub const PLAN_FILE: &str = "plan.json";

/// What an own-data run keeps in its configuration (and so in every checkpoint): enough to
/// open the dataset again and to preprocess a new scan exactly as the training scans.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnData {
    pub layout: LayoutKind,
    /// The channel trained on, and its modality name.
    pub channel: usize,
    pub modality: String,
    /// Classes including background.
    pub num_classes: usize,
    /// Names of classes 1.. (`"1"`, `"2"`, ... without `dataset.json`).
    pub class_names: Vec<String>,
    pub preprocessing: Preprocessing,
    /// Extra folder of unlabelled images (`--unlabelled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlabelled: Option<PathBuf>,
    /// Held-out fraction of the labelled cases (when no `val_cases` list).
    pub val_fraction: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_cases: Option<PathBuf>,
    /// Labelled cases asked for (`--labelnum`; `None`: all that are left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labelnum: Option<usize>,
}

/// Overrides of the planned values (CLI flags).
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    pub target_spacing: Option<[f64; 3]>,
    pub patch: Option<Vec<usize>>,
    pub arch: Option<Arch>,
    /// Intensity normalisation on (default) or off.
    pub normalize: Option<bool>,
    pub batch_size: Option<usize>,
    pub labeled_bs: Option<usize>,
    /// Memory budget (GiB) of the bound; default [`DEFAULT_MEMORY_GIB`].
    pub memory_gib: Option<f64>,
    /// The adapter's largest storage binding (bytes), when a GPU is open.
    pub max_binding: Option<u64>,
    /// The method the plan is for (AD-MT's student pass holds L + 2U samples).
    pub method: Method,
}

/// wgpu does not report the adapter's memory: the budget the patch is bounded by unless
/// `--memory-gb` says otherwise.
pub const DEFAULT_MEMORY_GIB: f64 = 8.0;
/// Device bytes one input voxel of one sample costs in a full SS-Net training step
/// (activations kept for backward, three VAT passes, heads on every voxel), measured as the
/// buffer pool's peak allocation over the second step (weights included, so generous for
/// large patches): VNet 3.45-3.70 KB at 32³ and 48×48×32 with batch 2, UNet 4.5-5.9 KB at
/// 64² and 96² with batch 4 (lavapipe, f32 path).
pub const BYTES_PER_VOXEL_3D: u64 = 3700;
pub const BYTES_PER_VOXEL_2D: u64 = 4800;
/// The widest single tensor per voxel and sample: the 32-wide projected feature rows (f32).
pub const WIDEST_TENSOR_BYTES_PER_VOXEL: u64 = 32 * 4;

/// The memory bound of the patch, written out in the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryBound {
    pub formula: String,
    pub budget_bytes: u64,
    pub bytes_per_voxel: u64,
    pub max_binding_bytes: Option<u64>,
    /// Largest patch (voxels per sample) both bounds allow.
    pub max_patch_voxels: u64,
}

/// The plan (module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub data: PathBuf,
    pub layout: String,
    pub modality: String,
    pub channel: usize,
    pub labelled_cases: usize,
    pub unlabelled_cases: usize,
    pub validation_cases: usize,
    pub test_cases: usize,
    /// Median voxel size (mm) of the labelled cases, canonical `[x, y, z]`.
    pub median_spacing: [f64; 3],
    pub target_spacing: [f64; 3],
    /// Median shape `[x, y, z]` after resampling.
    pub median_shape: [usize; 3],
    pub network: Arch,
    /// Why this network.
    pub network_reason: String,
    /// The method trained (`admt` recorded; SS-Net's plan.json keeps its bytes).
    #[serde(default, skip_serializing_if = "Method::is_ssnet")]
    pub method: Method,
    /// The preset whose hyper-parameters apply (`la` or `acdc`).
    pub preset: String,
    /// VNet `[x, y, z]`; UNet `[y, x]` (rows, columns of a slice).
    pub patch: Vec<usize>,
    pub batch_size: usize,
    pub labeled_bs: usize,
    pub memory: MemoryBound,
    pub num_classes: usize,
    pub class_names: Vec<String>,
    pub intensity: Intensity,
    /// Sliding-window strides (3D): along x and y, and along z.
    pub val_stride_xy: usize,
    pub val_stride_z: usize,
}

/// Canonical voxel size and dims `[x, y, z]` of a case from its header alone.
pub fn header_geometry(c: &CaseFiles) -> Result<([f64; 3], [usize; 3])> {
    let h = ::nifti::NiftiHeader::from_file(&c.image)
        .map_err(|e| Error::file(&c.image, format!("cannot read the NIfTI header: {e}")))?;
    let a = nifti::affine_of(&h);
    let o = Orientation::of_affine(&a);
    let dims = [1, 2, 3].map(|i| h.dim[i].max(1) as usize);
    Ok((o.apply3(Orientation::voxel_sizes(&a)), o.apply3(dims)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn round16(v: f64) -> usize {
    ((v / 16.0).ceil() as usize).max(1) * 16
}

/// Shrink the largest axis by 16 until `patch` fits `max_voxels` (every axis at least 16).
fn fit_patch(mut patch: Vec<usize>, max_voxels: u64) -> Vec<usize> {
    while patch.iter().product::<usize>() as u64 > max_voxels {
        let (i, &m) = patch
            .iter()
            .enumerate()
            .max_by_key(|(i, &s)| (s, usize::MAX - i))
            .expect("a patch has axes");
        if m <= 16 {
            break;
        }
        patch[i] -= 16;
    }
    patch
}

/// The class count and names of a dataset: `dataset.json`'s labels, else the largest label
/// value of the labelled cases of `split` (read from the files).
pub fn classes(ds: &OwnDataset, split: &Split) -> Result<(usize, Vec<String>)> {
    if let Some(l) = &ds.labels {
        let max = l.keys().copied().max().unwrap_or(0) as usize;
        if max == 0 {
            return Err(Error::file(
                ds.root.join("dataset.json"),
                "'labels' lists no foreground class: add one (e.g. \"1\": \"organ\")",
            ));
        }
        let names = (1..=max)
            .map(|v| l.get(&(v as u8)).cloned().unwrap_or_else(|| v.to_string()))
            .collect();
        return Ok((max + 1, names));
    }
    let ids: Vec<&String> = split.labelled.iter().chain(&split.validation).collect();
    let maxes: Vec<u8> = ids
        .par_iter()
        .map(|id| {
            let c = ds
                .case(id)
                .and_then(|c| c.label.clone())
                .ok_or_else(|| Error::msg(format!("case '{id}' has no label")))?;
            Ok(nifti::read(&c)?.labels()?.into_iter().max().unwrap_or(0))
        })
        .collect::<Result<_>>()?;
    let max = maxes.into_iter().max().unwrap_or(0) as usize;
    if max == 0 {
        return Err(Error::file(
            ds.root.join("labels"),
            "every label map is empty (background only): nothing to learn; check the labels",
        ));
    }
    Ok((max + 1, (1..=max).map(|v| v.to_string()).collect()))
}

/// The intensity normalisation: CT statistics from the labelled foreground (reads the
/// labelled images and labels), z-score otherwise, or none.
pub fn intensity_of(ds: &OwnDataset, split: &Split, normalize: bool) -> Result<Intensity> {
    if !normalize {
        return Ok(Intensity::None);
    }
    if !ds.is_ct() {
        return Ok(Intensity::ZScore);
    }
    let samples: Vec<Vec<f32>> = split
        .labelled
        .par_iter()
        .map(|id| {
            let c = ds
                .case(id)
                .ok_or_else(|| Error::msg(format!("no case '{id}'")))?;
            let pair = crate::data::layout::read::read_case(c, ds.labels.as_ref())?;
            let lab = pair.label.unwrap_or_default();
            Ok(intensity::foreground_samples(&pair.image.data, &lab))
        })
        .collect::<Result<_>>()?;
    Ok(intensity::ct_from_samples(samples.concat()).unwrap_or(Intensity::ZScore))
}

impl Plan {
    /// Plan a run on `ds` with `split` (module docs).
    pub fn make(ds: &OwnDataset, split: &Split, o: &PlanOptions) -> Result<Plan> {
        let labelled: Vec<&CaseFiles> = split
            .labelled
            .iter()
            .chain(&split.validation)
            .filter_map(|id| ds.case(id))
            .collect();
        let geo: Vec<([f64; 3], [usize; 3])> = labelled
            .iter()
            .map(|c| header_geometry(c))
            .collect::<Result<_>>()?;
        let median_spacing = [0, 1, 2].map(|a| median(geo.iter().map(|g| g.0[a]).collect()));
        let target = o.target_spacing.unwrap_or(median_spacing);
        if let Some(a) = target.iter().position(|&t| !(t.is_finite() && t > 0.0)) {
            return Err(Error::config(format!(
                "target spacing {target:?}: axis {a} is not a positive size in mm"
            )));
        }
        let median_shape = [0, 1, 2].map(|a| {
            median(
                geo.iter()
                    .map(|g| (g.1[a] as f64 * g.0[a] / target[a]).round())
                    .collect(),
            ) as usize
        });
        let in_plane = target[0].max(target[1]);
        let anisotropic = target[2] > 3.0 * in_plane;
        // Slices are cut along canonical z only: a scan whose coarse axis is x or y trains 3D.
        let coarse_xy = target[0].max(target[1]) > 3.0 * target[0].min(target[1]).min(target[2]);
        let (network, network_reason) = match o.arch {
            Some(a) => (a, "chosen with --network".to_string()),
            None if coarse_xy && !anisotropic => (
                Arch::VNet,
                format!(
                    "the coarse axis ({:.3} mm) is x or y, and 2D slices are cut along z only: 3D",
                    target[0].max(target[1])
                ),
            ),
            None if anisotropic => (
                Arch::UNet,
                format!(
                    "through-plane spacing {:.3} mm > 3 × in-plane {:.3} mm: 2D slices",
                    target[2], in_plane
                ),
            ),
            None => (
                Arch::VNet,
                format!(
                    "through-plane spacing {:.3} mm <= 3 × in-plane {:.3} mm: 3D",
                    target[2], in_plane
                ),
            ),
        };
        let (preset, batch, lbs, per_voxel) = match network {
            Arch::VNet => ("la", 4, 2, BYTES_PER_VOXEL_3D),
            Arch::UNet => ("acdc", 24, 12, BYTES_PER_VOXEL_2D),
        };
        // A small dataset cannot fill the preset's batch: each stream gives at most its items
        // (3D: scans; 2D: slices after resampling).
        let items = |ids: &[String]| -> Result<usize> {
            let mut n = 0;
            for id in ids {
                let c = ds
                    .case(id)
                    .ok_or_else(|| Error::msg(format!("no case '{id}'")))?;
                n += match network {
                    Arch::VNet => 1,
                    Arch::UNet => {
                        let (sp, d) = header_geometry(c)?;
                        ((d[2] as f64 * sp[2] / target[2]).round() as usize).max(1)
                    }
                };
            }
            Ok(n)
        };
        let (n_lab, n_unl) = (items(&split.labelled)?, items(&split.unlabelled)?);
        let labeled_bs = o.labeled_bs.unwrap_or_else(|| {
            lbs.min(n_lab).max(1).min(
                o.batch_size
                    .map_or(usize::MAX, |b| b.saturating_sub(1).max(1)),
            )
        });
        let batch_size = o
            .batch_size
            .unwrap_or_else(|| labeled_bs + (batch - lbs).min(n_unl).max(1));
        let gib = o.memory_gib.unwrap_or(DEFAULT_MEMORY_GIB);
        let budget = (gib * (1u64 << 30) as f64) as u64;
        // The samples of one training pass: the batch (SS-Net); AD-MT's student sees the
        // labelled, the weak and the strong unlabelled views (L + 2U), with no VAT passes or
        // heads, so SS-Net's measured bytes per voxel bound it from above.
        let (samples, what) = match o.method {
            Method::Ssnet => (batch_size, "batch"),
            Method::Admt => (
                2 * batch_size - labeled_bs,
                "(L + 2U) samples of AD-MT's student pass",
            ),
        };
        let by_budget = budget / (per_voxel * samples as u64);
        let by_binding = o
            .max_binding
            .map(|b| b / (WIDEST_TENSOR_BYTES_PER_VOXEL * samples as u64));
        let max_patch_voxels = by_budget.min(by_binding.unwrap_or(u64::MAX));
        let memory = MemoryBound {
            formula: format!(
                "patch voxels <= min(budget / ({per_voxel} B × {what}), max_storage_binding / ({WIDEST_TENSOR_BYTES_PER_VOXEL} B × {what}))"
            ),
            budget_bytes: budget,
            bytes_per_voxel: per_voxel,
            max_binding_bytes: o.max_binding,
            max_patch_voxels,
        };
        let planned: Vec<usize> = match network {
            Arch::VNet => median_shape.iter().map(|&s| round16(s as f64)).collect(),
            Arch::UNet => vec![
                round16(median_shape[1] as f64),
                round16(median_shape[0] as f64),
            ],
        };
        let patch = match &o.patch {
            Some(p) => p.clone(),
            None => fit_patch(planned, max_patch_voxels),
        };
        let (num_classes, class_names) = classes(ds, split)?;
        let intensity = intensity_of(ds, split, o.normalize.unwrap_or(true))?;
        let (val_stride_xy, val_stride_z) = match network {
            Arch::VNet if patch.len() == 3 => {
                ((patch[0].min(patch[1]) / 2).max(1), (patch[2] / 2).max(1))
            }
            _ => (18, 4),
        };
        Ok(Plan {
            data: ds.root.clone(),
            layout: ds.kind.name().to_string(),
            modality: ds.modality().to_string(),
            channel: ds.channel,
            labelled_cases: split.labelled.len(),
            unlabelled_cases: split.unlabelled.len(),
            validation_cases: split.validation.len(),
            test_cases: ds.test.len(),
            median_spacing,
            target_spacing: target,
            median_shape,
            network,
            network_reason,
            method: o.method,
            preset: preset.to_string(),
            patch,
            batch_size,
            labeled_bs,
            memory,
            num_classes,
            class_names,
            intensity,
            val_stride_xy,
            val_stride_z,
        })
    }

    /// The plan as pretty JSON (deterministic: fields in declaration order).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map(|s| s + "\n")
            .map_err(|e| Error::msg(format!("cannot serialise the plan: {e}")))
    }

    /// Write `dir/plan.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let p = dir.join(PLAN_FILE);
        std::fs::write(&p, self.to_json()?)
            .map_err(|e| Error::file(&p, format!("cannot write: {e}")))
    }

    /// A human summary (printed at the start of `train` and by `ssnet plan`).
    pub fn describe(&self) -> String {
        let v = |a: [f64; 3]| format!("{:.3} × {:.3} × {:.3}", a[0], a[1], a[2]);
        format!(
            "plan for {} ({} layout, {} channel {}):\n  cases: {} labelled, {} unlabelled, {} validation, {} test\n  median spacing {} mm -> target {} mm; median shape {:?}\n  network: {} ({}), {} on the '{}' hyper-parameters\n  patch {:?}, batch {}+{} ({})\n  {} classes: background, {}\n  intensity: {:?}",
            self.data.display(),
            self.layout,
            self.modality,
            self.channel,
            self.labelled_cases,
            self.unlabelled_cases,
            self.validation_cases,
            self.test_cases,
            v(self.median_spacing),
            v(self.target_spacing),
            self.median_shape,
            self.network.name(),
            self.network_reason,
            match self.method {
                Method::Ssnet => "SS-Net",
                Method::Admt => "AD-MT",
            },
            self.preset,
            self.patch,
            self.labeled_bs,
            self.batch_size - self.labeled_bs,
            self.memory.formula,
            self.num_classes,
            self.class_names.join(", "),
            self.intensity
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_rounds_and_fits() {
        assert_eq!(round16(100.0), 112);
        assert_eq!(round16(3.0), 16);
        assert_eq!(
            fit_patch(vec![208, 160, 96], 112 * 112 * 80),
            vec![96, 96, 96]
        );
        assert_eq!(fit_patch(vec![32, 32], 10), vec![16, 16]);
    }
}
