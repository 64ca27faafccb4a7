//! A user's own NIfTI collection: the three layouts `ssnet` recognises in a folder, the cases
//! they hold (labelled, unlabelled, test) and the split of a run.
//!
//! - **Decathlon / nnU-Net v1** ([`LayoutKind::Msd`]): `dataset.json` with `modality`,
//!   `labels`, `training: [{image, label}]`, `test`; `imagesTr/`, `labelsTr/`, `imagesTs/`.
//!   A listed image may also be stored the nnU-Net v1 way, `imagesTr/<case>_0000.nii.gz`.
//! - **nnU-Net v2** ([`LayoutKind::NnUnetV2`]): `dataset.json` with `channel_names`,
//!   `labels` (name → value), `file_ending`; images `imagesTr/<case>_0000.nii.gz` (channel
//!   suffix), labels `labelsTr/<case>.nii.gz`.
//! - **plain** ([`LayoutKind::Plain`]): `images/` and `labels/` with matching file names.
//!
//! Every training image without a label file is unlabelled, and so is every image of
//! `imagesUnlabelled/` (or of the folder given as `--unlabelled`). Case ids are file names
//! without extension and channel suffix; two files giving the same id are an error.
//! SS-Net's networks take one channel: a dataset with several is an error naming
//! `--channel K`, which picks one (`<case>_000K` files, or volume K of a Decathlon 4-D file).

pub mod convert;
pub mod dataset_json;
pub mod read;
pub mod split;

use crate::data::nifti::{self, Volume};
use crate::error::{Error, Result};
use dataset_json::{DatasetJson, JsonFlavour};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use split::{Split, SplitOptions, SPLITS_FILE};

/// The folder of extra unlabelled images inside a dataset.
pub const UNLABELLED_DIR: &str = "imagesUnlabelled";

/// Which layout a folder is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayoutKind {
    Msd,
    NnUnetV2,
    Plain,
}

impl LayoutKind {
    pub fn name(self) -> &'static str {
        match self {
            LayoutKind::Msd => "Decathlon / nnU-Net v1",
            LayoutKind::NnUnetV2 => "nnU-Net v2",
            LayoutKind::Plain => "plain images/ + labels/",
        }
    }
}

/// The files of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseFiles {
    pub id: String,
    pub image: PathBuf,
    /// Volume index inside a 4-D image (a multi-modal Decathlon file), else `None`.
    pub volume: Option<usize>,
    pub label: Option<PathBuf>,
}

impl CaseFiles {
    /// Read the image (the chosen volume of a 4-D file) as a 3-D volume. A 4-D file of a
    /// single-channel dataset is a one-line error with the fix.
    pub fn read_image(&self) -> Result<Volume> {
        match self.volume {
            Some(k) => read_volume_of_4d(&self.image, k),
            None => {
                check_3d(&self.image)?;
                nifti::read(&self.image)
            }
        }
    }
}

/// Options of [`OwnDataset::open`].
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// The channel to train on (required when the dataset has several).
    pub channel: Option<usize>,
    /// Another folder of unlabelled images.
    pub unlabelled: Option<PathBuf>,
}

/// A dataset in one of the three layouts, its files found and checked.
#[derive(Clone, Debug)]
pub struct OwnDataset {
    pub root: PathBuf,
    pub kind: LayoutKind,
    /// Channel names (modalities); `["unknown"]` for a plain folder.
    pub channels: Vec<String>,
    /// The channel used.
    pub channel: usize,
    /// Class value → name from `dataset.json` (background included); `None` for a plain folder.
    pub labels: Option<BTreeMap<u8, String>>,
    /// Training images, sorted by id: those with a label are the labelled cases.
    pub cases: Vec<CaseFiles>,
    /// Test images (`imagesTs/`, Decathlon `test` list), sorted by id.
    pub test: Vec<CaseFiles>,
}

const NII: [&str; 2] = [".nii.gz", ".nii"];

/// `name` without its NIfTI extension, or `None` for other files.
pub fn nii_stem(name: &str) -> Option<&str> {
    NII.iter().find_map(|e| name.strip_suffix(e))
}

/// Split a `<case>_NNNN` stem into the case id and the channel index.
pub fn split_channel(stem: &str) -> (&str, Option<usize>) {
    if let Some((id, k)) = stem.rsplit_once('_') {
        if k.len() == 4 && k.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty() {
            return (id, k.parse().ok());
        }
    }
    (stem, None)
}

/// Whether `root` looks like one of the three layouts (a `dataset.json`, or `images/`).
pub fn is_own_layout(root: &Path) -> bool {
    root.join("dataset.json").is_file() || root.join("images").is_dir()
}

/// The label folder of a dataset root in one of the three layouts (`labelsTr/` or
/// `labels/`), `None` for any other folder.
pub fn label_folder(root: &Path) -> Option<PathBuf> {
    if !is_own_layout(root) {
        return None;
    }
    ["labelsTr", "labels"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir())
}

/// The layout of `root`, or a one-line error saying what was expected.
pub fn detect(root: &Path) -> Result<(LayoutKind, Option<DatasetJson>)> {
    if !root.is_dir() {
        return Err(Error::file(
            root,
            "dataset folder not found: pass --data DIR",
        ));
    }
    let json = root.join("dataset.json");
    if json.is_file() {
        let d = DatasetJson::read(&json)?;
        let kind = match d.flavour {
            JsonFlavour::Msd => LayoutKind::Msd,
            JsonFlavour::NnUnetV2 => LayoutKind::NnUnetV2,
        };
        return Ok((kind, Some(d)));
    }
    if root.join("images").is_dir() {
        return Ok((LayoutKind::Plain, None));
    }
    Err(Error::file(
        root,
        "no dataset.json (Decathlon or nnU-Net layout) and no images/ folder (plain layout): see \"Your own data\" in the README",
    ))
}

/// The NIfTI files of a folder (sorted); a missing folder is empty.
fn nifti_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::file(dir, format!("cannot list folder: {e}")))?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(stem) = nii_stem(&name) {
            if e.path().is_file() {
                out.push((stem.to_string(), e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Add `c` to `map`, or a one-line error naming both files of a duplicate id.
fn insert_unique(map: &mut BTreeMap<String, CaseFiles>, c: CaseFiles) -> Result<()> {
    if let Some(prev) = map.get(&c.id) {
        return Err(Error::file(
            &c.image,
            format!(
                "duplicate case id '{}': {} gives it too (rename one)",
                c.id,
                prev.image.display()
            ),
        ));
    }
    map.insert(c.id.clone(), c);
    Ok(())
}

/// The images of a folder for `channel`: `<id>_000K` files of that channel, plain `<id>`
/// files as they are (channel 0 only when the folder uses suffixes).
fn images_of(dir: &Path, channel: usize, suffixed: bool) -> Result<BTreeMap<String, CaseFiles>> {
    let mut map = BTreeMap::new();
    for (stem, path) in nifti_files(dir)? {
        let (id, k) = if suffixed {
            split_channel(&stem)
        } else {
            (stem.as_str(), None)
        };
        if k.is_some_and(|k| k != channel) {
            continue;
        }
        insert_unique(
            &mut map,
            CaseFiles {
                id: id.to_string(),
                image: path,
                volume: None,
                label: None,
            },
        )?;
    }
    Ok(map)
}

/// Resolve a path of `dataset.json` (`./imagesTr/x.nii.gz`) under `root`.
fn resolve(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches("./"))
}

impl OwnDataset {
    /// Find the cases of `root` (module docs). Every check is a one-line error naming the
    /// file and the fix: a label without its image, a `dataset.json` naming a missing file,
    /// duplicate case ids, several channels without `--channel`, no image at all.
    pub fn open(root: &Path, opts: &OpenOptions) -> Result<OwnDataset> {
        let (kind, json) = detect(root)?;
        let json_path = root.join("dataset.json");
        let channels = json
            .as_ref()
            .map_or_else(|| vec!["unknown".to_string()], |j| j.channels.clone());
        let channel = match (opts.channel, channels.len()) {
            (Some(k), n) if k >= n => {
                return Err(Error::config(format!(
                    "--channel {k} is out of range: {} has {n} channel(s) ({})",
                    if json.is_some() { json_path.display().to_string() } else { root.display().to_string() },
                    channels.join(", ")
                )))
            }
            (Some(k), _) => k,
            (None, 1) => 0,
            (None, n) => {
                return Err(Error::file(
                    &json_path,
                    format!(
                        "{n} channels ({}): SS-Net's networks take one; pick one with --channel K (0..{})",
                        channels.join(", "),
                        n - 1
                    ),
                ))
            }
        };
        let multi = channels.len() > 1;
        let (mut train, test) = match kind {
            LayoutKind::Plain => {
                let mut imgs = images_of(&root.join("images"), channel, false)?;
                for (stem, path) in nifti_files(&root.join("labels"))? {
                    match imgs.get_mut(&stem) {
                        Some(c) => c.label = Some(path),
                        None => {
                            return Err(Error::file(
                                &path,
                                format!(
                                    "label without its image: add images/{stem}.nii.gz or remove it"
                                ),
                            ))
                        }
                    }
                }
                (imgs, BTreeMap::new())
            }
            LayoutKind::NnUnetV2 => {
                let mut imgs = images_of(&root.join("imagesTr"), channel, true)?;
                for (stem, path) in nifti_files(&root.join("labelsTr"))? {
                    match imgs.get_mut(&stem) {
                        Some(c) => c.label = Some(path),
                        None => {
                            return Err(Error::file(
                                &path,
                                format!(
                                    "label without its image: add imagesTr/{stem}_{channel:04}.nii.gz or remove it"
                                ),
                            ))
                        }
                    }
                }
                let test = images_of(&root.join("imagesTs"), channel, true)?;
                (imgs, test)
            }
            LayoutKind::Msd => {
                let j = json
                    .as_ref()
                    .expect("a Decathlon layout has its dataset.json");
                let mut imgs = BTreeMap::new();
                let mut listed = std::collections::BTreeSet::new();
                for (img, lab) in &j.training {
                    let c = Self::msd_case(root, &json_path, img, Some(lab), channel, multi)?;
                    listed.insert(c.image.clone());
                    insert_unique(&mut imgs, c)?;
                }
                // Images of imagesTr/ that no training entry lists: unlabelled.
                for (id, c) in images_of(&root.join("imagesTr"), channel, true)? {
                    if !listed.contains(&c.image) && !imgs.contains_key(&id) {
                        // A file without a channel suffix holds every channel (4-D).
                        let name = c.image.file_name().unwrap_or_default().to_string_lossy();
                        let suffixed = split_channel(nii_stem(&name).unwrap_or_default())
                            .1
                            .is_some();
                        let volume = (multi && !suffixed).then_some(channel);
                        insert_unique(&mut imgs, CaseFiles { volume, ..c })?;
                    }
                }
                let mut test = BTreeMap::new();
                for t in &j.test {
                    insert_unique(
                        &mut test,
                        Self::msd_case(root, &json_path, t, None, channel, multi)?,
                    )?;
                }
                (imgs, test)
            }
        };
        let extra = opts
            .unlabelled
            .clone()
            .unwrap_or_else(|| root.join(UNLABELLED_DIR));
        if opts.unlabelled.as_ref().is_some_and(|d| !d.is_dir()) {
            return Err(Error::file(&extra, "--unlabelled: folder not found"));
        }
        for (_, c) in images_of(&extra, channel, kind != LayoutKind::Plain)? {
            insert_unique(&mut train, c)?;
        }
        let cases: Vec<CaseFiles> = train.into_values().collect();
        if cases.is_empty() {
            return Err(Error::file(
                root,
                format!("no training image found for the {} layout", kind.name()),
            ));
        }
        Ok(OwnDataset {
            root: root.to_path_buf(),
            kind,
            channels,
            channel,
            labels: json.map(|j| j.labels),
            cases,
            test: test.into_values().collect(),
        })
    }

    /// One case of a Decathlon `dataset.json` (image as listed, or its nnU-Net v1 channel
    /// file `<case>_000K`).
    fn msd_case(
        root: &Path,
        json_path: &Path,
        img: &str,
        lab: Option<&String>,
        channel: usize,
        multi: bool,
    ) -> Result<CaseFiles> {
        let listed = resolve(root, img);
        let name = listed
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let stem = nii_stem(&name).ok_or_else(|| {
            Error::file(
                json_path,
                format!("'{img}' is not a NIfTI file (.nii.gz, .nii)"),
            )
        })?;
        let (image, volume) = if listed.is_file() {
            (listed.clone(), multi.then_some(channel))
        } else {
            let ext = if name.ends_with(".nii.gz") {
                ".nii.gz"
            } else {
                ".nii"
            };
            let v1 = listed.with_file_name(format!("{stem}_{channel:04}{ext}"));
            if !v1.is_file() {
                return Err(Error::file(
                    json_path,
                    format!(
                        "names a missing file: {} (nor {} exists); fix the entry or add the file",
                        listed.display(),
                        v1.display()
                    ),
                ));
            }
            (v1, None)
        };
        let label = match lab {
            Some(l) => {
                let p = resolve(root, l);
                if !p.is_file() {
                    return Err(Error::file(
                        json_path,
                        format!(
                            "names a missing label file: {}; fix the entry or add the file",
                            p.display()
                        ),
                    ));
                }
                Some(p)
            }
            None => None,
        };
        Ok(CaseFiles {
            id: split_channel(stem).0.to_string(),
            image,
            volume,
            label,
        })
    }

    /// The labelled training cases.
    pub fn labelled(&self) -> impl Iterator<Item = &CaseFiles> {
        self.cases.iter().filter(|c| c.label.is_some())
    }

    /// The name of the channel used (`CT`, `MRI`, ...).
    pub fn modality(&self) -> &str {
        &self.channels[self.channel]
    }

    /// Whether the channel used is CT (its intensities are normalised the CT way).
    pub fn is_ct(&self) -> bool {
        self.modality().trim().eq_ignore_ascii_case("ct")
    }

    /// A case of the training images by id.
    pub fn case(&self, id: &str) -> Option<&CaseFiles> {
        self.cases
            .binary_search_by(|c| c.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.cases[i])
    }
}

/// A one-line error for a 4-D file where one 3-D volume per case is needed.
fn check_3d(path: &Path) -> Result<()> {
    let Ok(h) = ::nifti::NiftiHeader::from_file(path) else {
        return Ok(()); // nifti::read reports what is wrong with it
    };
    let n4 = h.dim.get(4).copied().unwrap_or(1);
    if h.dim[0] >= 4 && n4 > 1 {
        return Err(Error::file(
            path,
            format!(
                "4-D image ({} volumes of {}x{}x{}): one 3-D volume per case is needed; store one channel per file (<case>_0000.nii.gz) or list the channels in dataset.json and pick one with --channel K",
                n4, h.dim[1], h.dim[2], h.dim[3]
            ),
        ));
    }
    Ok(())
}

/// Volume `k` of a 4-D NIfTI file (a multi-modal Decathlon image) as a 3-D volume with the
/// file's spatial header.
pub fn read_volume_of_4d(path: &Path, k: usize) -> Result<Volume> {
    use ::nifti::{IntoNdArray, NiftiObject};
    let obj = ::nifti::ReaderOptions::new()
        .read_file(path)
        .map_err(|e| Error::file(path, format!("cannot read NIfTI: {e}")))?;
    let mut header = obj.header().clone();
    let dims: Vec<usize> = header.dim[1..=header.dim[0].clamp(1, 7) as usize]
        .iter()
        .map(|&d| d as usize)
        .collect();
    let n = dims.get(3).copied().unwrap_or(1);
    if k >= n {
        return Err(Error::file(
            path,
            format!("--channel {k}: the image has {n} volume(s) (dims {dims:?})"),
        ));
    }
    if dims.len() > 4 {
        return Err(Error::file(
            path,
            format!("{}-D image: at most 4-D is read", dims.len()),
        ));
    }
    let datatype = header
        .data_type()
        .map_err(|e| Error::file(path, format!("bad datatype: {e}")))?;
    let arr = obj
        .into_volume()
        .into_ndarray::<f32>()
        .map_err(|e| Error::file(path, format!("cannot decode voxels: {e}")))?;
    let vol = if arr.ndim() == 4 {
        arr.index_axis(ndarray::Axis(3), k).to_owned()
    } else {
        arr
    };
    let [nx, ny, nz] = [
        dims[0],
        dims.get(1).copied().unwrap_or(1),
        dims.get(2).copied().unwrap_or(1),
    ];
    if vol.len() != nx * ny * nz {
        return Err(Error::file(
            path,
            format!(
                "volume {k} has {} voxels, dims {dims:?} need {}",
                vol.len(),
                nx * ny * nz
            ),
        ));
    }
    // Ours is [z][y][x] C order (x fastest): the voxels read in Fortran order of [x, y, z].
    let vol = vol
        .into_dimensionality::<ndarray::Ix3>()
        .map_err(|e| Error::file(path, format!("cannot shape the volume: {e}")))?;
    let mut data = Vec::with_capacity(nx * ny * nz);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                data.push(vol[[x, y, z]]);
            }
        }
    }
    header.dim = [3, nx as u16, ny as u16, nz as u16, 1, 1, 1, 1];
    header.scl_slope = 1.0;
    header.scl_inter = 0.0;
    let spacing = [1, 2, 3].map(|i| header.pixdim[i].abs() as f64);
    Ok(Volume {
        data,
        dims: [nx, ny, nz],
        spacing,
        affine: nifti::affine_of(&header),
        header,
        datatype,
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_suffix() {
        assert_eq!(split_channel("case_0000"), ("case", Some(0)));
        assert_eq!(split_channel("la_003_0001"), ("la_003", Some(1)));
        assert_eq!(split_channel("case_000"), ("case_000", None));
        assert_eq!(split_channel("_0000"), ("_0000", None));
    }
}
