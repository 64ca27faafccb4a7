//! `ssnet predict`: segment volumes with a checkpoint.
//!
//! ```text
//! ssnet predict --checkpoint CKPT --input FILE_OR_DIR --output DIR
//!               [--patch X,Y,Z | H,W] [--stride-xy 18] [--stride-z 4] [--gaussian] [--batch N]
//!               [--largest-cc] [--probabilities]
//! ```
//!
//! The architecture comes from the checkpoint ([`Model::load`]). A VNet runs SS-Net's 3D
//! sliding window ([`crate::infer::window`]) on the volume as `[X, Y, Z]`; a UNet runs the
//! slice-wise 2D pipeline ([`crate::infer::slices`]) on `[S, H, W]` (NIfTI `[z][y][x]`, the
//! ACDC order).
//!
//! Inputs: a NIfTI file (`.nii`, `.nii.gz`), an SS-Net HDF5 file (`.h5`, its `image`
//! dataset, row-major `[X, Y, Z]` as LA's `mri_norm2.h5`), or a folder: every such file in
//! it (label maps `*_gt.nii.gz` skipped) and every `<ID>/mri_norm2.h5` below it (the LA
//! layout). The case name is the file name without its extension (`<ID>` for
//! `<ID>/mri_norm2.h5`).
//!
//! No output may be one of the inputs ([`crate::cli::outputs`]): `--output` on the scans' own
//! folder is refused before anything is written when a name would collide. `--patch` and
//! `--batch` are checked against the adapter's largest buffer and the free host memory; a
//! checkpoint with non-finite weights is refused, non-finite probabilities stop the run.
//!
//! Outputs in `--output`: `<case>.nii.gz`, a uint8 label map with the input's header (dims,
//! spacing, sform/qform: it opens aligned with the input). An `.h5` input carries no geometry:
//! its label map gets NIfTI dims `[X, Y, Z]` (voxel `(i, j, k)` = `image[i, j, k]`), an
//! identity orientation and LA's 0.625 mm isotropic spacing (1 mm for a UNet checkpoint, whose
//! `.h5` volumes are `[S, H, W]`, written as NIfTI `[W, H, S]`). `--probabilities` also
//! writes float32 maps: `<case>_prob.nii.gz` (foreground probability) with two classes,
//! `<case>_prob_c<k>.nii.gz` for each class k ≥ 1 with more.

use crate::cli::outputs::{refuse_overwriting_inputs, shared_folder_note, Plan};
use crate::data::dataset::{check_intensities, LA_SPACING_MM};
use crate::data::h5;
use crate::data::nifti::{self, xyz_to_zyx, Volume};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::infer::{predict_volume, InferConfig, Prediction, SliceWise, SlidingWindow, Weighting};
use crate::metrics::{largest_component, CONN_26};
use crate::nn::{Arch, Model};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Inference settings shared by `predict` and `eval --checkpoint`.
#[derive(Args, Debug, Clone)]
pub struct InferArgs {
    /// VNet: sliding-window patch X,Y,Z (default 112,112,80). UNet: the size H,W every slice is
    /// zoomed to (default 256,256). Multiples of 16.
    #[arg(long, value_delimiter = ',', value_name = "X,Y,Z")]
    pub patch: Option<Vec<usize>>,
    /// Sliding-window stride along x and y (VNet).
    #[arg(long, default_value_t = 18, value_name = "N")]
    pub stride_xy: usize,
    /// Sliding-window stride along z (VNet).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub stride_z: usize,
    /// Weight overlapping patches by a Gaussian importance map (sigma = patch/8, nnU-Net)
    /// instead of SS-Net's plain average (VNet).
    #[arg(long)]
    pub gaussian: bool,
    /// Patches (VNet) or slices (UNet) per forward pass; 0 = automatic.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub batch: usize,
}

impl InferArgs {
    /// The inference settings for a model of `arch`.
    pub fn config(&self, arch: Arch) -> Result<InferConfig> {
        let mut cfg = InferConfig::default();
        match arch {
            Arch::VNet => {
                if let Some(p) = &self.patch {
                    cfg.window.patch = <[usize; 3]>::try_from(p.as_slice()).map_err(|_| {
                        Error::config(format!("--patch {p:?}: a VNet takes three sizes X,Y,Z"))
                    })?;
                }
                cfg.window.stride_xy = self.stride_xy;
                cfg.window.stride_z = self.stride_z;
                cfg.window.weighting = if self.gaussian {
                    Weighting::Gaussian
                } else {
                    Weighting::Uniform
                };
                cfg.window.batch = self.batch;
                cfg.window.validate()?;
                if cfg.window.patch.iter().any(|&s| s % 16 != 0) {
                    return Err(Error::config(format!("--patch {:?}: every side must be a multiple of 16 (four halvings in the VNet)", cfg.window.patch)));
                }
            }
            Arch::UNet => {
                if let Some(p) = &self.patch {
                    cfg.slices.size = <[usize; 2]>::try_from(p.as_slice()).map_err(|_| {
                        Error::config(format!(
                            "--patch {p:?}: a UNet takes two sizes H,W (the slice size)"
                        ))
                    })?;
                }
                cfg.slices.batch = self.batch;
                if cfg.slices.size.iter().any(|&s| s == 0 || s % 16 != 0) {
                    return Err(Error::config(format!("--patch {:?}: every side must be a positive multiple of 16 (four halvings in the UNet)", cfg.slices.size)));
                }
            }
        }
        Ok(cfg)
    }
}

/// A human summary of the settings.
pub fn describe(arch: Arch, cfg: &InferConfig) -> String {
    match arch {
        Arch::VNet => {
            let SlidingWindow {
                patch,
                stride_xy,
                stride_z,
                weighting,
                ..
            } = &cfg.window;
            format!(
                "sliding window, patch {patch:?}, stride {stride_xy}/{stride_z}, {}",
                if *weighting == Weighting::Gaussian {
                    "Gaussian weights"
                } else {
                    "plain average"
                }
            )
        }
        Arch::UNet => {
            let SliceWise { size, .. } = &cfg.slices;
            format!("slice-wise at {}×{}", size[0], size[1])
        }
    }
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Checkpoint (safetensors, ours or a converted SS-Net state_dict); VNet or UNet is read
    /// from it.
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,
    /// A NIfTI (.nii, .nii.gz) or SS-Net HDF5 (.h5, dataset `image`) volume, or a folder of
    /// them (also `<ID>/mri_norm2.h5` below it). An .h5 has no geometry: its label map is
    /// written with an identity orientation and 0.625 mm isotropic voxels (LA; 1 mm for a UNet).
    #[arg(long, value_name = "FILE_OR_DIR")]
    pub input: PathBuf,
    /// Output folder: `<case>.nii.gz` label maps (uint8, the input's header).
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    #[command(flatten)]
    pub infer: InferArgs,
    /// Keep only the largest 26-connected component of each predicted class (SS-Net's LA
    /// post-processing).
    #[arg(long)]
    pub largest_cc: bool,
    /// Also write the probability maps as float32 NIfTI: `<case>_prob.nii.gz` (foreground) with
    /// two classes, `<case>_prob_c<k>.nii.gz` per class k >= 1 with more.
    #[arg(long)]
    pub probabilities: bool,
}

/// One input file and its case name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub case: String,
    pub path: PathBuf,
}

fn is_h5(name: &str) -> bool {
    name.ends_with(".h5") || name.ends_with(".hdf5")
}

fn nii_stem(name: &str) -> Option<&str> {
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
}

/// The case name of an input file: its name without extension; the folder's name for the LA
/// layout's `<ID>/mri_norm2.h5`.
pub fn case_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if let Some(stem) = nii_stem(&name) {
        return stem.to_string();
    }
    let stem = name
        .strip_suffix(".h5")
        .or_else(|| name.strip_suffix(".hdf5"))
        .unwrap_or(&name);
    if stem == "mri_norm2" {
        if let Some(parent) = path.parent().and_then(|p| p.file_name()) {
            return parent.to_string_lossy().to_string();
        }
    }
    stem.to_string()
}

/// The inputs of `--input` (module docs), sorted by path; an error naming the path when
/// there is none or two share a case name.
pub fn collect_inputs(input: &Path) -> Result<Vec<Input>> {
    if input.is_file() {
        let name = input
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if nii_stem(&name).is_none() && !is_h5(&name) {
            return Err(Error::file(
                input,
                "not a NIfTI (.nii, .nii.gz) or HDF5 (.h5) file",
            ));
        }
        return Ok(vec![Input {
            case: case_name(input),
            path: input.to_path_buf(),
        }]);
    }
    if !input.is_dir() {
        return Err(Error::file(input, "no such file or folder"));
    }
    let rd = std::fs::read_dir(input)
        .map_err(|e| Error::file(input, format!("cannot read folder: {e}")))?;
    let mut paths = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if p.is_dir() {
            let la = p.join("mri_norm2.h5");
            if la.is_file() {
                paths.push(la);
            }
        } else if nii_stem(&name).is_some_and(|s| !s.ends_with("_gt")) || is_h5(&name) {
            paths.push(p);
        }
    }
    paths.sort();
    let mut out: Vec<Input> = Vec::new();
    for p in paths {
        let case = case_name(&p);
        if let Some(prev) = out.iter().find(|i| i.case == case) {
            return Err(Error::file(
                &p,
                format!(
                    "case name '{case}' also given by {} (rename one)",
                    prev.path.display()
                ),
            ));
        }
        out.push(Input { case, path: p });
    }
    if out.is_empty() {
        return Err(Error::file(
            input,
            "no NIfTI (.nii, .nii.gz) or HDF5 (.h5) volumes in this folder",
        ));
    }
    Ok(out)
}

/// An input volume in the network's order, and the header its outputs are written with.
pub struct InputVolume {
    pub image: Vec<f32>,
    /// Row-major shape of `image`: `[X, Y, Z]` for a VNet, `[S, H, W]` for a UNet.
    pub shape: [usize; 3],
    /// Header of the written NIfTI files (dims `[nx, ny, nz]`).
    pub header: ::nifti::NiftiHeader,
    /// `image` is `[x][y][z]`: results go back to NIfTI's `[z][y][x]` before writing.
    pub xyz: bool,
}

impl InputVolume {
    /// Read a NIfTI or `.h5` input for a model of `arch` (module docs).
    pub fn read(path: &Path, arch: Arch) -> Result<InputVolume> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let v = if is_h5(&name) {
            let (data, shape) = h5::read_f32(path, "image")?;
            let [a, b, c] = <[usize; 3]>::try_from(shape.as_slice()).map_err(|_| {
                Error::file(
                    path,
                    format!("dataset 'image' has shape {shape:?}, expected a 3-D volume"),
                )
            })?;
            if a * b * c == 0 {
                return Err(Error::file(
                    path,
                    format!("dataset 'image' is empty (shape {shape:?})"),
                ));
            }
            // Only the header of this volume is used.
            let (dims, spacing) = match arch {
                Arch::VNet => ([a, b, c], LA_SPACING_MM),
                Arch::UNet => ([c, b, a], 1.0),
            };
            let header = Volume::new(vec![0.0; a * b * c], dims, [spacing; 3])
                .map_err(|e| Error::file(path, e))?
                .header;
            InputVolume {
                image: data,
                shape: [a, b, c],
                header,
                xyz: arch == Arch::VNet,
            }
        } else {
            let v = nifti::read(path)?;
            match arch {
                Arch::VNet => InputVolume {
                    image: v.to_xyz(),
                    shape: v.dims,
                    header: v.header,
                    xyz: true,
                },
                Arch::UNet => InputVolume {
                    shape: v.shape_zyx(),
                    image: v.data,
                    header: v.header,
                    xyz: false,
                },
            }
        };
        check_intensities(&v.image, path)?;
        Ok(v)
    }

    /// Values over `shape` in NIfTI's `[z][y][x]` order.
    pub fn to_nifti_order<T: Copy>(&self, v: &[T]) -> Vec<T> {
        if self.xyz {
            xyz_to_zyx(v, self.shape)
        } else {
            v.to_vec()
        }
    }
}

/// Keep the largest 26-connected component of every non-zero class of a label map.
pub fn keep_largest_components(
    labels: &mut [u8],
    dims: &[usize],
    num_classes: usize,
) -> Result<()> {
    for c in 1..num_classes as u8 {
        let mask: Vec<bool> = labels.iter().map(|&l| l == c).collect();
        if !mask.iter().any(|&m| m) {
            continue;
        }
        let keep = largest_component(&mask, dims, CONN_26)?;
        for (l, (&m, &k)) in labels.iter_mut().zip(mask.iter().zip(&keep)) {
            if m && !k {
                *l = 0;
            }
        }
    }
    Ok(())
}

/// An error about one input as one line naming its file (errors that already name a file
/// are kept as they are).
pub fn naming(path: &Path) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        e @ Error::File { .. } => e,
        e => Error::file(path, e),
    }
}

fn predict_one(
    model: &Model,
    cfg: &InferConfig,
    a: &PredictArgs,
    inp: &Input,
) -> Result<(Prediction, Vec<PathBuf>)> {
    let vol = InputVolume::read(&inp.path, model.cfg.arch)?;
    let mut pred = predict_volume(model, &vol.image, vol.shape, cfg, a.probabilities)?;
    if a.largest_cc {
        keep_largest_components(&mut pred.labels, &vol.shape, pred.num_classes)?;
    }
    let mut written = Vec::new();
    let out = a.output.join(format!("{}.nii.gz", inp.case));
    nifti::write_labels_with_header(&out, &vol.to_nifti_order(&pred.labels), &vol.header)?;
    written.push(out);
    if a.probabilities {
        let classes: Vec<usize> = if pred.num_classes == 2 {
            vec![1]
        } else {
            (1..pred.num_classes).collect()
        };
        for c in classes {
            let name = if pred.num_classes == 2 {
                format!("{}_prob.nii.gz", inp.case)
            } else {
                format!("{}_prob_c{c}.nii.gz", inp.case)
            };
            let p = a.output.join(name);
            let probs = pred
                .class_probs(c)
                .ok_or_else(|| Error::msg("probabilities were not kept"))?;
            nifti::write_volume_with_header(&p, &vol.to_nifti_order(probs), &vol.header)?;
            written.push(p);
        }
    }
    Ok((pred, written))
}

/// The files `predict` writes for `inputs` (before any is written).
fn planned_writes(a: &PredictArgs, inputs: &[Input], num_classes: usize) -> Vec<PathBuf> {
    let mut w = Vec::new();
    for i in inputs {
        w.push(a.output.join(format!("{}.nii.gz", i.case)));
        if a.probabilities {
            if num_classes == 2 {
                w.push(a.output.join(format!("{}_prob.nii.gz", i.case)));
            } else {
                for c in 1..num_classes {
                    w.push(a.output.join(format!("{}_prob_c{c}.nii.gz", i.case)));
                }
            }
        }
    }
    w
}

/// The size a window or slice batch of `cfg` puts on the adapter (`--patch`, `--batch`;
/// the automatic batch fits by construction), checked before anything is allocated.
pub fn check_infer_sizes(gpu: &Gpu, arch: Arch, cfg: &InferConfig) -> Result<()> {
    match arch {
        Arch::VNet => crate::infer::budget::check_fits(
            gpu,
            "--patch",
            cfg.window.batch.max(1),
            &cfg.window.patch,
        ),
        Arch::UNet => crate::infer::budget::check_fits(
            gpu,
            "--patch",
            cfg.slices.batch.max(1),
            &cfg.slices.size,
        ),
    }
}

pub fn run(a: PredictArgs, device: Option<&str>) -> Result<()> {
    let inputs = collect_inputs(&a.input)?;
    crate::nn::checkpoint::check_file(&a.checkpoint)?;
    let gpu = Gpu::new(device)?;
    let model = Model::load(&gpu, &a.checkpoint)?;
    if let Some(train_cfg) = crate::cli::own::checkpoint_config(&a.checkpoint)? {
        // Trained on own data: its preprocessing and inverse (cli::own).
        return crate::cli::own::predict(&a, &model, &train_cfg, &gpu);
    }
    let cfg = a.infer.config(model.cfg.arch)?;
    check_infer_sizes(&gpu, model.cfg.arch, &cfg)?;
    let plan = Plan {
        inputs: inputs
            .iter()
            .map(|i| i.path.clone())
            .chain([a.checkpoint.clone()])
            .collect(),
        writes: planned_writes(&a, &inputs, model.cfg.num_classes),
        write_dirs: vec![],
        flag: "--output",
    };
    refuse_overwriting_inputs(&plan)?;
    if let Some(note) = shared_folder_note(&plan) {
        println!("{note}");
    }
    std::fs::create_dir_all(&a.output)
        .map_err(|e| Error::file(&a.output, format!("cannot create output folder: {e}")))?;
    println!(
        "{} ({}, {} classes) on {}: {}, {} case(s)",
        a.checkpoint.display(),
        model.cfg.arch.name(),
        model.cfg.num_classes,
        gpu.describe(),
        describe(model.cfg.arch, &cfg),
        inputs.len()
    );
    let total = inputs.len();
    for (i, inp) in inputs.iter().enumerate() {
        let t = Instant::now();
        let (pred, written) = predict_one(&model, &cfg, &a, inp).map_err(naming(&inp.path))?;
        let fg = pred.labels.iter().filter(|&&l| l != 0).count();
        println!(
            "[{}/{total}] {} {:?}: {fg} foreground voxels, {:.1} s -> {}",
            i + 1,
            inp.case,
            pred.shape,
            t.elapsed().as_secs_f64(),
            written
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
