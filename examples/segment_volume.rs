//! Segment one volume with a trained checkpoint, from Rust: open a device, load the
//! checkpoint, predict, write the label map.
//!
//! ```sh
//! cargo run --release --example segment_volume -- runs/acdc/best.safetensors scan.nii.gz labels.nii.gz
//! ```
//!
//! A VNet checkpoint runs the 3D sliding window over the volume `[X, Y, Z]`; a UNet one
//! predicts slice by slice over `[S, H, W]` (NIfTI's on-disk `[z][y][x]` order).

use ssnet::data::nifti;
use ssnet::gpu::Gpu;
use ssnet::infer::{predict_volume, InferConfig};
use ssnet::nn::{Arch, Model};
use std::path::PathBuf;

fn main() -> ssnet::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [checkpoint, input, output] = args.as_slice() else {
        return Err(ssnet::Error::config(
            "usage: segment_volume CHECKPOINT INPUT.nii.gz OUTPUT.nii.gz",
        ));
    };
    // The adapter of SSNET_DEVICE, else the first discrete GPU, else any.
    let gpu = Gpu::shared()?;
    eprintln!("device: {}", gpu.describe());
    let model = Model::load(&gpu, checkpoint)?;
    let volume = nifti::read(input)?;
    let (image, shape) = match model.cfg.arch {
        Arch::VNet => (volume.to_xyz(), volume.dims),
        Arch::UNet => (volume.data.clone(), volume.shape_zyx()),
    };
    let pred = predict_volume(&model, &image, shape, &InferConfig::default(), false)?;
    // Back to NIfTI's [z][y][x] order for writing with the input's header.
    let labels = match model.cfg.arch {
        Arch::VNet => nifti::xyz_to_zyx(&pred.labels, shape),
        Arch::UNet => pred.labels,
    };
    nifti::write_labels(output, &labels, &volume)?;
    let counts: Vec<usize> = (0..pred.num_classes as u8)
        .map(|c| labels.iter().filter(|&&l| l == c).count())
        .collect();
    eprintln!("wrote {} (voxels per class {counts:?})", output.display());
    Ok(())
}
