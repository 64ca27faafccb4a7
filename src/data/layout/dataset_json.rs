//! `dataset.json` of the Medical Segmentation Decathlon / nnU-Net v1 and of nnU-Net v2.
//!
//! - MSD / v1: `modality` (`{"0": "CT"}`), `labels` (`{"0": "background", "1": "liver"}`),
//!   `training` (`[{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}]`),
//!   `test` (`["./imagesTs/y.nii.gz"]`).
//! - v2: `channel_names` (`{"0": "CT"}`), `labels` (`{"background": 0, "liver": 1}`; a
//!   region given as a list of values is refused: SS-Net's losses take one class per voxel),
//!   `numTraining`, `file_ending` (`.nii.gz`).
//!
//! Both are read into [`DatasetJson`]: the channels in order, the classes by value.

use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Which of the two formats a `dataset.json` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonFlavour {
    Msd,
    NnUnetV2,
}

/// The parts of a `dataset.json` that matter here.
#[derive(Clone, Debug)]
pub struct DatasetJson {
    pub flavour: JsonFlavour,
    /// Channel names (modalities) by channel index.
    pub channels: Vec<String>,
    /// Class value → name (background included when listed).
    pub labels: BTreeMap<u8, String>,
    /// MSD: the `training` pairs as written (relative to the dataset folder).
    pub training: Vec<(String, String)>,
    /// MSD: the `test` images as written.
    pub test: Vec<String>,
    /// v2: `numTraining` when given.
    pub num_training: Option<usize>,
    /// v2: `file_ending` (default `.nii.gz`).
    pub file_ending: String,
}

fn channel_map(path: &Path, key: &str, v: &Value) -> Result<Vec<String>> {
    let obj = v.as_object().ok_or_else(|| {
        Error::file(
            path,
            format!("'{key}' must be an object like {{\"0\": \"CT\"}}"),
        )
    })?;
    let mut by_index = BTreeMap::new();
    for (k, name) in obj {
        let i: usize = k.trim().parse().map_err(|_| {
            Error::file(
                path,
                format!("'{key}' key '{k}' is not a channel index (0, 1, ...)"),
            )
        })?;
        let name = name
            .as_str()
            .ok_or_else(|| Error::file(path, format!("'{key}'.'{k}' must be a string")))?;
        by_index.insert(i, name.to_string());
    }
    if by_index.keys().copied().ne(0..by_index.len()) {
        return Err(Error::file(
            path,
            format!("'{key}' must number its channels 0, 1, ... without gaps"),
        ));
    }
    if by_index.is_empty() {
        return Err(Error::file(path, format!("'{key}' names no channel")));
    }
    Ok(by_index.into_values().collect())
}

fn label_value(path: &Path, v: i64, what: &str) -> Result<u8> {
    u8::try_from(v).map_err(|_| {
        Error::file(
            path,
            format!("label {what} = {v} is outside 0..=255 (label maps are stored as uint8)"),
        )
    })
}

impl DatasetJson {
    /// Read and check `path`. Unknown keys are ignored; a missing or ill-typed required key is
    /// a one-line error naming it.
    pub fn read(path: &Path) -> Result<DatasetJson> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::file(path, "must hold a JSON object"))?;
        let labels_v = obj
            .get("labels")
            .ok_or_else(|| Error::file(path, "no 'labels' (class value → name) entry: add one"))?;
        let labels_o = labels_v.as_object().ok_or_else(|| {
            Error::file(path, "'labels' must be an object of class values and names")
        })?;
        if let Some(ch) = obj.get("channel_names") {
            let channels = channel_map(path, "channel_names", ch)?;
            let mut labels = BTreeMap::new();
            for (name, val) in labels_o {
                let n = val.as_i64().ok_or_else(|| {
                    Error::file(
                        path,
                        format!("label '{name}' is {val}: region labels (lists) are not supported, give one integer value per class"),
                    )
                })?;
                labels.insert(label_value(path, n, name)?, name.clone());
            }
            let file_ending = obj
                .get("file_ending")
                .and_then(Value::as_str)
                .unwrap_or(".nii.gz")
                .to_string();
            if file_ending != ".nii.gz" && file_ending != ".nii" {
                return Err(Error::file(
                    path,
                    format!("file_ending '{file_ending}': only NIfTI (.nii.gz, .nii) is read"),
                ));
            }
            return Ok(DatasetJson {
                flavour: JsonFlavour::NnUnetV2,
                channels,
                labels,
                training: Vec::new(),
                test: Vec::new(),
                num_training: obj
                    .get("numTraining")
                    .and_then(Value::as_u64)
                    .map(|n| n as usize),
                file_ending,
            });
        }
        let modality = obj.get("modality").ok_or_else(|| {
            Error::file(
                path,
                "neither 'channel_names' (nnU-Net v2) nor 'modality' (Decathlon / nnU-Net v1)",
            )
        })?;
        let channels = channel_map(path, "modality", modality)?;
        let mut labels = BTreeMap::new();
        for (k, name) in labels_o {
            let n: i64 = k.trim().parse().map_err(|_| {
                Error::file(
                    path,
                    format!("'labels' key '{k}' is not a class value (Decathlon labels are {{\"1\": \"name\"}})"),
                )
            })?;
            let name = name.as_str().unwrap_or_default().to_string();
            labels.insert(label_value(path, n, k)?, name);
        }
        let mut training = Vec::new();
        if let Some(t) = obj.get("training") {
            let arr = t
                .as_array()
                .ok_or_else(|| Error::file(path, "'training' must be a list of {image, label}"))?;
            for (i, e) in arr.iter().enumerate() {
                let get = |k: &str| {
                    e.get(k)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| {
                            Error::file(path, format!("training[{i}] has no '{k}' path"))
                        })
                };
                training.push((get("image")?, get("label")?));
            }
        }
        let mut test = Vec::new();
        if let Some(t) = obj.get("test") {
            let arr = t
                .as_array()
                .ok_or_else(|| Error::file(path, "'test' must be a list of image paths"))?;
            for (i, e) in arr.iter().enumerate() {
                // Some writers give {"image": ...} entries instead of plain strings.
                let s = e
                    .as_str()
                    .or_else(|| e.get("image").and_then(Value::as_str))
                    .ok_or_else(|| Error::file(path, format!("test[{i}] is not an image path")))?;
                test.push(s.to_string());
            }
        }
        Ok(DatasetJson {
            flavour: JsonFlavour::Msd,
            channels,
            labels,
            training,
            test,
            num_training: None,
            file_ending: ".nii.gz".into(),
        })
    }

    /// Whether channel `k` is CT (by name, case-insensitive).
    pub fn is_ct(&self, k: usize) -> bool {
        self.channels
            .get(k)
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("ct"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DatasetJson> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dataset.json");
        std::fs::write(&p, text).unwrap();
        DatasetJson::read(&p)
    }

    #[test]
    fn reads_both_flavours() {
        let m = parse(
            r#"{"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "LA"},
            "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}],
            "test": ["./imagesTs/b.nii.gz"]}"#,
        )
        .unwrap();
        assert_eq!(m.flavour, JsonFlavour::Msd);
        assert_eq!(m.channels, ["MRI"]);
        assert_eq!(m.labels[&1], "LA");
        assert_eq!(m.training.len(), 1);
        assert_eq!(m.test, ["./imagesTs/b.nii.gz"]);
        let v = parse(
            r#"{"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
            "numTraining": 3, "file_ending": ".nii.gz"}"#,
        )
        .unwrap();
        assert_eq!(v.flavour, JsonFlavour::NnUnetV2);
        assert!(v.is_ct(0));
        assert_eq!(v.labels[&1], "liver");
        assert_eq!(v.num_training, Some(3));
    }

    #[test]
    fn one_line_errors() {
        let e = parse(r#"{"channel_names": {"0": "CT"}, "labels": {"liver": [1, 2]}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("dataset.json") && e.contains("region labels"),
            "{e}"
        );
        let e = parse(r#"{"modality": {"0": "CT"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no 'labels'"), "{e}");
        let e = parse("{").unwrap_err().to_string();
        assert!(e.contains("not valid JSON") && !e.contains('\n'), "{e}");
    }
}
