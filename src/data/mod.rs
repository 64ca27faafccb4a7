//! NIfTI, HDF5, datasets, augmentation: plain CPU code.
//!
//! - [`nifti`]: `.nii` / `.nii.gz` images in and out ([`nifti::Volume`], `[z][y][x]` order);
//! - [`h5`]: SS-Net's HDF5 files (`image` f32, `label` u8);
//! - [`dataset`]: the LA, ACDC and plain-folder layouts, with validation of every case;
//! - [`layout`]: a user's own collection (Decathlon, nnU-Net v2, plain `images/` + `labels/`)
//!   and the split of a run;
//! - [`preprocess`]: orientation, crop, intensity, resampling of own scans, and the inverse
//!   for predictions; the on-disk cache.

pub mod dataset;
pub mod h5;
pub mod layout;
pub mod nifti;
pub mod preprocess;
