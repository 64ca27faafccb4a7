//! Dataset layouts: where the cases of a split are and how to load one, validated.
//!
//! - [`LaDataset`]: SS-Net's LA layout: `root/train.list`, `root/test.list` (one ID per line),
//!   `root/2018LA_Seg_Training Set/<ID>/mri_norm2.h5`. Cases are `[X, Y, Z]` C order, as
//!   stored and as SS-Net feeds its VNet (`[1, 1, X, Y, Z]`); 2 classes.
//! - [`AcdcDataset`]: the NIfTI ACDC set of `shared/data/acdc`: `root/splits/{train,val,test}.list`
//!   and `train_slices.list`, `root/<split>/<case>.nii.gz` + `<case>_gt.nii.gz`. Cases are
//!   `[S, H, W]` (NIfTI `[z][y][x]`); `<case>_slice_n` of `train_slices.list` is slice `n - 1`;
//!   4 classes (0 background, 1 RV, 2 Myo, 3 LV).
//! - [`FolderDataset`]: a user's folder of `X.nii.gz` images with `X_gt.nii.gz` labels
//!   (`.nii` too); cases `[z][y][x]`; the number of classes is given.
//!
//! Opening a dataset reads its lists and checks that every listed case exists (a missing one
//! is a one-line error naming the list and the case); loading a case checks that image and
//! label have the same shape, that every label is below the number of classes and that the
//! image has no NaN or infinite voxel (each a one-line error naming the file).

use super::{h5, nifti};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// LA: background and left atrium.
pub const LA_NUM_CLASSES: u8 = 2;
/// LA voxel size in mm (isotropic; stated by the challenge, not stored in the h5 files).
pub const LA_SPACING_MM: f64 = 0.625;
/// ACDC: background, RV, Myo, LV.
pub const ACDC_NUM_CLASSES: u8 = 4;
/// ACDC class names of labels 1, 2, 3.
pub const ACDC_CLASS_NAMES: [&str; 3] = ["RV", "Myo", "LV"];
/// The LA layout's image folder.
pub const LA_IMAGE_DIR: &str = "2018LA_Seg_Training Set";

/// One loaded, validated case: image and label on the same row-major grid.
#[derive(Clone, Debug)]
pub struct Case {
    pub id: String,
    pub image: Vec<f32>,
    pub label: Vec<u8>,
    /// Row-major shape of `image` and `label`: LA `[X, Y, Z]`, NIfTI layouts `[z, y, x]`
    /// (ACDC `[S, H, W]`).
    pub shape: [usize; 3],
    /// Voxel size in the order of `shape`, when the file says (the LA h5 files do not; see
    /// [`LA_SPACING_MM`]).
    pub spacing: Option<[f64; 3]>,
    pub image_path: PathBuf,
    pub label_path: PathBuf,
    /// The image's NIfTI header, to write a prediction aligned with it
    /// ([`nifti::write_labels_with_header`]); `None` for HDF5 cases.
    pub header: Option<::nifti::NiftiHeader>,
}

/// A 2-D slice of a case: `[H, W]` row-major.
#[derive(Clone, Debug)]
pub struct Slice {
    pub image: Vec<f32>,
    pub label: Vec<u8>,
    pub shape: [usize; 2],
}

impl Case {
    /// Slice `k` along the first axis (ACDC: slice `k` of `[S, H, W]`, SS-Net's
    /// `image[k, :, :]`).
    pub fn slice(&self, k: usize) -> Result<Slice> {
        let [s, h, w] = self.shape;
        if k >= s {
            return Err(Error::file(
                &self.image_path,
                format!("slice index {k} out of range: the volume has {s} slices"),
            ));
        }
        let r = k * h * w..(k + 1) * h * w;
        Ok(Slice {
            image: self.image[r.clone()].to_vec(),
            label: self.label[r].to_vec(),
            shape: [h, w],
        })
    }
}

/// The checks every loaded case passes: same number of voxels (shapes are compared by the
/// caller, which knows them), labels below `num_classes`, finite image.
pub fn validate(
    image: &[f32],
    label: &[u8],
    num_classes: u8,
    image_path: &Path,
    label_path: &Path,
) -> Result<()> {
    if image.len() != label.len() {
        return Err(Error::file(
            label_path,
            format!(
                "{} voxels, the image {} has {}",
                label.len(),
                image_path.display(),
                image.len()
            ),
        ));
    }
    check_intensities(image, image_path)?;
    if let Some(&max) = label.iter().max() {
        if max >= num_classes {
            let count = label.iter().filter(|&&l| l >= num_classes).count();
            return Err(Error::file(
                label_path,
                format!(
                    "label value {max} outside the class range 0..={} ({count} voxels)",
                    num_classes.saturating_sub(1)
                ),
            ));
        }
    }
    Ok(())
}

/// Largest intensity magnitude accepted. The network's float32 sums of squares (BatchNorm
/// statistics, the losses) overflow past ~1.8e19 per voxel, less once summed over a batch;
/// no scanner's intensities come near 1e10, so a value beyond it is a bad file or a missing
/// normalisation, and would show up much later as a non-finite loss.
pub const MAX_ABS_INTENSITY: f32 = 1e10;

/// Every voxel finite and within ±[`MAX_ABS_INTENSITY`]; a one-line error naming the file.
pub fn check_intensities(image: &[f32], image_path: &Path) -> Result<()> {
    let bad = image.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        let first = image.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(Error::file(
            image_path,
            format!("{bad} NaN or infinite voxels (first at flat index {first})"),
        ));
    }
    if let Some((i, v)) = image
        .iter()
        .enumerate()
        .find(|(_, v)| v.abs() > MAX_ABS_INTENSITY)
    {
        let count = image.iter().filter(|v| v.abs() > MAX_ABS_INTENSITY).count();
        return Err(Error::file(
            image_path,
            format!(
                "intensity {v:e} at flat index {i} ({count} voxels beyond ±{MAX_ABS_INTENSITY:e}) would overflow the network's float32 arithmetic: rescale or normalise the image"
            ),
        ));
    }
    Ok(())
}

/// The non-empty lines of a list file, trimmed.
pub fn read_list(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read list: {e}")))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

fn shape3(shape: &[usize], path: &Path) -> Result<[usize; 3]> {
    <[usize; 3]>::try_from(shape)
        .map_err(|_| Error::file(path, format!("expected a 3-D volume, got shape {shape:?}")))
}

/// Load a NIfTI image / label pair as a `[z][y][x]` case.
pub fn load_nifti_case(
    id: &str,
    image_path: &Path,
    label_path: &Path,
    num_classes: u8,
) -> Result<Case> {
    let img = nifti::read(image_path)?;
    let lab = nifti::read(label_path)?;
    if img.dims != lab.dims {
        return Err(Error::file(
            label_path,
            format!(
                "label dims {:?} differ from the image's {:?} ({})",
                lab.dims,
                img.dims,
                image_path.display()
            ),
        ));
    }
    let label = lab.labels()?;
    validate(&img.data, &label, num_classes, image_path, label_path)?;
    Ok(Case {
        id: id.to_string(),
        shape: img.shape_zyx(),
        spacing: Some(img.spacing_zyx()),
        image: img.data,
        label,
        image_path: image_path.to_path_buf(),
        label_path: label_path.to_path_buf(),
        header: Some(img.header),
    })
}

/// `<ID>` lines of a list whose files must exist: error naming the list and the first
/// missing case.
fn check_listed(list: &Path, ids: &[String], file_of: impl Fn(&str) -> PathBuf) -> Result<()> {
    for id in ids {
        let f = file_of(id);
        if !f.is_file() {
            return Err(Error::file(
                list,
                format!("case '{id}' not found ({} does not exist)", f.display()),
            ));
        }
    }
    Ok(())
}

/// SS-Net's LA layout.
#[derive(Clone, Debug)]
pub struct LaDataset {
    pub root: PathBuf,
    pub train: Vec<String>,
    pub test: Vec<String>,
}

impl LaDataset {
    /// Read `train.list` and `test.list` under `root` and check every listed file exists.
    pub fn open(root: impl AsRef<Path>) -> Result<LaDataset> {
        let root = root.as_ref().to_path_buf();
        let ds = LaDataset {
            train: read_list(root.join("train.list"))?,
            test: read_list(root.join("test.list"))?,
            root,
        };
        check_listed(&ds.root.join("train.list"), &ds.train, |id| ds.h5_path(id))?;
        check_listed(&ds.root.join("test.list"), &ds.test, |id| ds.h5_path(id))?;
        Ok(ds)
    }

    /// `root/2018LA_Seg_Training Set/<id>/mri_norm2.h5`.
    pub fn h5_path(&self, id: &str) -> PathBuf {
        self.root.join(LA_IMAGE_DIR).join(id).join("mri_norm2.h5")
    }

    /// Load one case: `[X, Y, Z]` image and label, validated.
    pub fn load(&self, id: &str) -> Result<Case> {
        let path = self.h5_path(id);
        let il = h5::read_image_label(&path)?;
        let shape = shape3(&il.shape, &path)?;
        validate(&il.image, &il.label, LA_NUM_CLASSES, &path, &path)?;
        Ok(Case {
            id: id.to_string(),
            image: il.image,
            label: il.label,
            shape,
            spacing: None,
            image_path: path.clone(),
            label_path: path,
            header: None,
        })
    }
}

/// A split of the ACDC layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The folder and list name: `train`, `val`, `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// One entry of `train_slices.list`: `<case>_slice_<n>` is slice `index = n - 1` of `case`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceRef {
    pub case: String,
    pub index: usize,
}

/// Parse `<case>_slice_<n>` (n ≥ 1).
pub fn parse_slice_name(name: &str) -> Option<SliceRef> {
    let (case, n) = name.rsplit_once("_slice_")?;
    let n: usize = n.parse().ok()?;
    (n >= 1 && !case.is_empty()).then(|| SliceRef {
        case: case.to_string(),
        index: n - 1,
    })
}

/// The ACDC layout of `shared/data/acdc`.
#[derive(Clone, Debug)]
pub struct AcdcDataset {
    pub root: PathBuf,
    pub train: Vec<String>,
    pub val: Vec<String>,
    pub test: Vec<String>,
    /// `train_slices.list` in its order (SS-Net labels its first 68 / 136 slices); empty when
    /// the file is absent.
    pub train_slices: Vec<SliceRef>,
    /// Folder holding each case.
    dirs: HashMap<String, PathBuf>,
}

impl AcdcDataset {
    /// Read the split lists, find each case's folder, and check every entry of
    /// `train_slices.list` names an existing case and a slice within its volume.
    pub fn open(root: impl AsRef<Path>) -> Result<AcdcDataset> {
        let root = root.as_ref().to_path_buf();
        let splits = root.join("splits");
        // Index the case images of every split folder once.
        let mut dirs = HashMap::new();
        for s in Split::ALL {
            let dir = root.join(s.name());
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let stem = name
                    .strip_suffix(".nii.gz")
                    .or_else(|| name.strip_suffix(".nii"));
                if let Some(stem) = stem {
                    if !stem.ends_with("_gt") {
                        dirs.entry(stem.to_string()).or_insert_with(|| dir.clone());
                    }
                }
            }
        }
        let mut lists = Vec::new();
        for s in Split::ALL {
            let list = splits.join(format!("{}.list", s.name()));
            let ids = read_list(&list)?;
            for id in &ids {
                if !dirs.contains_key(id) {
                    return Err(Error::file(
                        &list,
                        format!("case '{id}' not found (no {id}.nii.gz in train/, val/ or test/)"),
                    ));
                }
            }
            lists.push(ids);
        }
        let mut train_slices = Vec::new();
        let slices_list = splits.join("train_slices.list");
        if slices_list.is_file() {
            let mut depth: HashMap<String, usize> = HashMap::new();
            for name in read_list(&slices_list)? {
                let r = parse_slice_name(&name).ok_or_else(|| {
                    Error::file(
                        &slices_list,
                        format!("'{name}' is not of the form <case>_slice_<n> (n ≥ 1)"),
                    )
                })?;
                let Some(dir) = dirs.get(&r.case) else {
                    return Err(Error::file(&slices_list, format!("case '{}' of '{name}' not found (no {}.nii.gz in train/, val/ or test/)", r.case, r.case)));
                };
                let s = match depth.get(&r.case) {
                    Some(&s) => s,
                    None => {
                        let s = slices_of(&image_file(dir, &r.case))?;
                        depth.insert(r.case.clone(), s);
                        s
                    }
                };
                if r.index >= s {
                    return Err(Error::file(
                        &slices_list,
                        format!("'{name}': case '{}' has only {s} slices", r.case),
                    ));
                }
                train_slices.push(r);
            }
        }
        let test = lists.pop().unwrap_or_default();
        let val = lists.pop().unwrap_or_default();
        let train = lists.pop().unwrap_or_default();
        Ok(AcdcDataset {
            root,
            train,
            val,
            test,
            train_slices,
            dirs,
        })
    }

    /// The cases of a split, in list order.
    pub fn cases(&self, split: Split) -> &[String] {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        }
    }

    /// The image and label files of a case.
    pub fn paths(&self, case: &str) -> Result<(PathBuf, PathBuf)> {
        let dir = self
            .dirs
            .get(case)
            .ok_or_else(|| Error::file(&self.root, format!("no ACDC case '{case}'")))?;
        Ok((image_file(dir, case), label_file(dir, case)))
    }

    /// Load a case: `[S, H, W]` image and label, validated (4 classes).
    pub fn load(&self, case: &str) -> Result<Case> {
        let (img, lab) = self.paths(case)?;
        load_nifti_case(case, &img, &lab, ACDC_NUM_CLASSES)
    }

    /// Load the slice of a `train_slices.list` entry (reads its whole volume).
    pub fn load_slice(&self, r: &SliceRef) -> Result<Slice> {
        self.load(&r.case)?.slice(r.index)
    }
}

/// `dir/<case>.nii.gz`, or `.nii` when only that exists.
fn image_file(dir: &Path, case: &str) -> PathBuf {
    nii_or_gz(dir, case)
}

fn label_file(dir: &Path, case: &str) -> PathBuf {
    nii_or_gz(dir, &format!("{case}_gt"))
}

fn nii_or_gz(dir: &Path, stem: &str) -> PathBuf {
    let gz = dir.join(format!("{stem}.nii.gz"));
    let plain = dir.join(format!("{stem}.nii"));
    if !gz.is_file() && plain.is_file() {
        plain
    } else {
        gz
    }
}

/// Number of slices (NIfTI dim[3]) from the header alone.
fn slices_of(path: &Path) -> Result<usize> {
    let h = ::nifti::NiftiHeader::from_file(path)
        .map_err(|e| Error::file(path, format!("cannot read the NIfTI header: {e}")))?;
    let d = h
        .dim()
        .map_err(|e| Error::file(path, format!("bad dimensions: {e}")))?;
    Ok(d.get(2).map_or(1, |&s| s as usize))
}

/// A folder of `X.nii.gz` images with `X_gt.nii.gz` labels.
#[derive(Clone, Debug)]
pub struct FolderDataset {
    pub dir: PathBuf,
    /// Cases with both an image and a label, sorted by name.
    pub cases: Vec<String>,
    /// Images without a label (usable as unlabelled data), sorted by name.
    pub unlabelled: Vec<String>,
    pub num_classes: u8,
}

impl FolderDataset {
    /// Scan `dir`. A label without its image is an error naming the label file.
    pub fn open(dir: impl AsRef<Path>, num_classes: u8) -> Result<FolderDataset> {
        let dir = dir.as_ref().to_path_buf();
        if num_classes < 2 {
            return Err(Error::config(format!(
                "a dataset needs at least 2 classes, got {num_classes}"
            )));
        }
        let rd = std::fs::read_dir(&dir)
            .map_err(|e| Error::file(&dir, format!("cannot read folder: {e}")))?;
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(stem) = name
                .strip_suffix(".nii.gz")
                .or_else(|| name.strip_suffix(".nii"))
            else {
                continue;
            };
            match stem.strip_suffix("_gt") {
                Some(case) => labels.push(case.to_string()),
                None => images.push(stem.to_string()),
            }
        }
        images.sort();
        images.dedup();
        labels.sort();
        labels.dedup();
        for l in &labels {
            if images.binary_search(l).is_err() {
                return Err(Error::file(
                    label_file(&dir, l),
                    format!("label without its image {l}.nii.gz"),
                ));
            }
        }
        let (cases, unlabelled): (Vec<String>, Vec<String>) = images
            .into_iter()
            .partition(|i| labels.binary_search(i).is_ok());
        if cases.is_empty() && unlabelled.is_empty() {
            return Err(Error::file(
                &dir,
                "no NIfTI images (X.nii.gz with labels X_gt.nii.gz) in this folder",
            ));
        }
        Ok(FolderDataset {
            dir,
            cases,
            unlabelled,
            num_classes,
        })
    }

    /// Image and label files of a case.
    pub fn paths(&self, case: &str) -> (PathBuf, PathBuf) {
        (image_file(&self.dir, case), label_file(&self.dir, case))
    }

    /// Load a labelled case, `[z][y][x]`, validated.
    pub fn load(&self, case: &str) -> Result<Case> {
        let (img, lab) = self.paths(case);
        load_nifti_case(case, &img, &lab, self.num_classes)
    }

    /// Check a list of case names (e.g. a user's split file) against the folder: error naming
    /// the list and the first case without image and label.
    pub fn check_list(&self, list: &Path, ids: &[String]) -> Result<()> {
        for id in ids {
            if self.cases.binary_search(id).is_err() {
                return Err(Error::file(
                    list,
                    format!(
                        "case '{id}' not found in {} (needs {id}.nii.gz and {id}_gt.nii.gz)",
                        self.dir.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_names() {
        assert_eq!(
            parse_slice_name("patient099_frame01_slice_15"),
            Some(SliceRef {
                case: "patient099_frame01".into(),
                index: 14
            })
        );
        assert_eq!(parse_slice_name("x_slice_0"), None);
        assert_eq!(parse_slice_name("x_slice_a"), None);
        assert_eq!(parse_slice_name("noslice"), None);
    }

    #[test]
    fn validate_messages() {
        let p = Path::new("img.nii.gz");
        let l = Path::new("lab.nii.gz");
        assert!(validate(&[0.0, 1.0], &[0, 3], 4, p, l).is_ok());
        let e = validate(&[0.0, 1.0], &[0, 4], 4, p, l)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("lab.nii.gz:")
                && e.contains("label value 4 outside the class range 0..=3"),
            "{e}"
        );
        let e = validate(&[f32::NAN, 1.0], &[0, 1], 4, p, l)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("img.nii.gz:") && e.contains("NaN"), "{e}");
    }
}
