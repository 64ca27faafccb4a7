//! NIfTI, HDF5, datasets, augmentation: plain CPU code.
//!
//! - [`nifti`]: `.nii` / `.nii.gz` images in and out ([`nifti::Volume`], `[z][y][x]` order);
//! - [`h5`]: SS-Net's HDF5 files (`image` f32, `label` u8);
//! - [`dataset`]: the LA, ACDC and plain-folder layouts, with validation of every case.

pub mod dataset;
pub mod h5;
pub mod nifti;
