//! SS-Net's HDF5 files (LA `mri_norm2.h5`, the SSL4MIS ACDC `.h5`): an `image` dataset
//! (float32) and a `label` dataset (uint8) of the same shape, row-major (C order).
//!
//! Read with the pure-Rust `hdf5-reader` crate, which `shared/design/IO-NOTES.md` found
//! bit-exact on every LA file and which refuses a read of the wrong element type. Every error
//! is one line naming the file and the dataset.

use crate::error::{Error, Result};
use hdf5_reader::{Datatype, Hdf5File};
use std::path::Path;

/// An `image` / `label` pair as stored: both row-major over `shape` (LA: `[X, Y, Z]`).
#[derive(Clone, Debug)]
pub struct ImageLabel {
    pub image: Vec<f32>,
    pub label: Vec<u8>,
    pub shape: Vec<usize>,
}

fn open(path: &Path) -> Result<Hdf5File> {
    if !path.is_file() {
        return Err(Error::file(path, "no such file"));
    }
    Hdf5File::open(path).map_err(|e| match e {
        hdf5_reader::error::Error::InvalidMagic => {
            Error::file(path, "not an HDF5 file (no HDF5 signature)")
        }
        e => Error::file(path, format!("cannot open HDF5 file: {e}")),
    })
}

/// A short name of an HDF5 datatype for messages ("float32", "uint8", "string", ...).
fn type_name(t: &Datatype) -> String {
    match t {
        Datatype::FixedPoint { size, signed, .. } => {
            format!("{}int{}", if *signed { "" } else { "u" }, *size as u32 * 8)
        }
        Datatype::FloatingPoint { size, .. } => format!("float{}", *size as u32 * 8),
        Datatype::String { .. } => "string".into(),
        Datatype::Compound { .. } => "compound".into(),
        Datatype::Array { .. } => "array".into(),
        Datatype::Enum { .. } => "enum".into(),
        Datatype::VarLen { .. } => "variable-length".into(),
        Datatype::Opaque { .. } => "opaque".into(),
        Datatype::Reference { .. } => "reference".into(),
        Datatype::Bitfield { size, .. } => format!("bitfield{}", *size as u32 * 8),
    }
}

/// Names of the datasets at the root, for "no dataset" messages.
fn root_datasets(f: &Hdf5File) -> String {
    match f.root_group().and_then(|g| g.member_names()) {
        Ok((_, mut names)) if !names.is_empty() => {
            names.sort();
            names.join(", ")
        }
        Ok(_) => "none".into(),
        Err(_) => "unknown".into(),
    }
}

/// Whether a lookup failed because the object does not exist (not because the file is bad).
fn not_found(e: &hdf5_reader::error::Error) -> bool {
    use hdf5_reader::error::Error as E;
    match e {
        E::DatasetNotFound(_) | E::GroupNotFound(_) => true,
        E::Context { source, .. } => not_found(source),
        _ => false,
    }
}

/// Which element type a read expects.
#[derive(Clone, Copy)]
enum Want {
    F32,
    U8,
}

fn dataset(f: &Hdf5File, path: &Path, name: &str, want: Want) -> Result<hdf5_reader::Dataset> {
    let ds = f.dataset(name).map_err(|e| {
        if not_found(&e) {
            Error::file(
                path,
                format!("no dataset '{name}' (datasets: {})", root_datasets(f)),
            )
        } else {
            Error::file(
                path,
                format!("cannot open dataset '{name}' (damaged or truncated file?): {e}"),
            )
        }
    })?;
    let ok = matches!(
        (want, ds.dtype()),
        (Want::F32, Datatype::FloatingPoint { size: 4, .. })
            | (
                Want::U8,
                Datatype::FixedPoint {
                    size: 1,
                    signed: false,
                    ..
                }
            )
    );
    if !ok {
        let expected = match want {
            Want::F32 => "float32",
            Want::U8 => "uint8",
        };
        return Err(Error::file(
            path,
            format!(
                "dataset '{name}' is {}, expected {expected}",
                type_name(ds.dtype())
            ),
        ));
    }
    Ok(ds)
}

fn read_ds<T: hdf5_reader::H5Type + Default + Clone>(
    ds: &hdf5_reader::Dataset,
    path: &Path,
    name: &str,
) -> Result<(Vec<T>, Vec<usize>)> {
    let shape: Vec<usize> = ds.shape().iter().map(|&d| d as usize).collect();
    let n: usize = shape.iter().product();
    let mut data = vec![T::default(); n];
    ds.read_into(&mut data)
        .map_err(|e| Error::file(path, format!("cannot read dataset '{name}': {e}")))?;
    Ok((data, shape))
}

/// Read a float32 dataset: (values row-major, shape).
pub fn read_f32(path: impl AsRef<Path>, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    let path = path.as_ref();
    let f = open(path)?;
    read_ds(&dataset(&f, path, name, Want::F32)?, path, name)
}

/// Read a uint8 dataset: (values row-major, shape).
pub fn read_u8(path: impl AsRef<Path>, name: &str) -> Result<(Vec<u8>, Vec<usize>)> {
    let path = path.as_ref();
    let f = open(path)?;
    read_ds(&dataset(&f, path, name, Want::U8)?, path, name)
}

/// Read SS-Net's `image` (float32) and `label` (uint8) datasets, which must have the same
/// shape.
pub fn read_image_label(path: impl AsRef<Path>) -> Result<ImageLabel> {
    let path = path.as_ref();
    let f = open(path)?;
    let (image, shape) = read_ds::<f32>(&dataset(&f, path, "image", Want::F32)?, path, "image")?;
    let (label, lshape) = read_ds::<u8>(&dataset(&f, path, "label", Want::U8)?, path, "label")?;
    if shape != lshape {
        return Err(Error::file(
            path,
            format!("dataset 'label' has shape {lshape:?}, 'image' has {shape:?}"),
        ));
    }
    Ok(ImageLabel {
        image,
        label,
        shape,
    })
}
