//! safetensors checkpoints keyed by the reference's state_dict names. A checkpoint converted
//! from a PyTorch SS-Net `.pth` (tools/pth_to_safetensors.py) or the golden `*_init` fixtures
//! load as they are: the architecture is read from the metadata when present, else inferred
//! from the tensor names and shapes.
//!
//! Writes go to a temporary file in the target folder, flushed, then renamed over the target:
//! a kill at any moment leaves either the old file or the new one, never a torn one.

use super::{spec, Arch, Model, ModelConfig};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Metadata key holding the model configuration as JSON.
pub const META_MODEL: &str = "ssnet.model";

/// Tensors (f32, with shapes) and string metadata of a safetensors file.
pub struct Contents {
    pub tensors: BTreeMap<String, (Vec<f32>, Vec<usize>)>,
    pub metadata: HashMap<String, String>,
}

/// A checkpoint path that can be read: an existing file, else one line saying what it is
/// (a folder: which checkpoints it holds).
pub fn check_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        let held: Vec<String> = ["best.safetensors", "last.safetensors"]
            .iter()
            .filter(|n| path.join(n).is_file())
            .map(|n| path.join(n).display().to_string())
            .collect();
        return Err(Error::file(
            path,
            if held.is_empty() {
                "is a folder, not a checkpoint file (it holds no best.safetensors or last.safetensors)".to_string()
            } else {
                format!(
                    "is a folder, not a checkpoint file: give one of {}",
                    held.join(", ")
                )
            },
        ));
    }
    if !path.is_file() {
        return Err(Error::file(path, "checkpoint not found"));
    }
    Ok(())
}

/// Largest weight magnitude of a checkpoint that is not diverged. Trained SS-Net weights
/// stay within a few units; a value past this is a run that blew up. BatchNorm running
/// statistics are exempt (on raw intensities, CT in HU, a variance of 1e6 is ordinary).
pub const MAX_ABS_WEIGHT: f32 = 1e6;

/// Every tensor finite and, except BatchNorm running statistics, within ±[`MAX_ABS_WEIGHT`]:
/// else one line naming the first bad tensor.
pub fn check_finite<'a>(
    tensors: impl IntoIterator<Item = (&'a String, &'a Vec<f32>)>,
) -> std::result::Result<(), String> {
    for (name, v) in tensors {
        let bad = v.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 {
            return Err(format!(
                "tensor '{name}' holds {bad} NaN or infinite values: the weights diverged"
            ));
        }
        if name.contains("running_") {
            continue;
        }
        if let Some(m) = v.iter().map(|x| x.abs()).find(|&m| m > MAX_ABS_WEIGHT) {
            return Err(format!(
                "tensor '{name}' holds a value of magnitude {m:e} (beyond {MAX_ABS_WEIGHT:e}): the weights diverged"
            ));
        }
    }
    Ok(())
}

/// Read every tensor of a safetensors file as f32 (F32 as is; U8/I64/F64 converted).
pub fn read(path: &Path) -> Result<Contents> {
    check_file(path)?;
    let bytes = std::fs::read(path)
        .map_err(|e| Error::file(path, format!("cannot read checkpoint: {e}")))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::file(path, format!("not a safetensors checkpoint: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::file(path, format!("bad safetensors header: {e}")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let d = view.data();
        let v: Vec<f32> = match view.dtype() {
            Dtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Dtype::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Dtype::U8 => d.iter().map(|&b| b as f32).collect(),
            other => {
                return Err(Error::file(
                    path,
                    format!("tensor '{name}' has unsupported dtype {other:?}"),
                ))
            }
        };
        tensors.insert(name, (v, view.shape().to_vec()));
    }
    Ok(Contents { tensors, metadata })
}

/// Write f32 tensors and metadata atomically (temporary file + rename).
pub fn write(
    path: &Path,
    tensors: &BTreeMap<String, (Vec<f32>, Vec<usize>)>,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, (v, s))| {
            (
                k.clone(),
                bytemuck::cast_slice::<f32, u8>(v).to_vec(),
                s.clone(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(k, b, s)| {
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::file(path, format!("tensor '{k}': {e}")))
        })
        .collect::<Result<_>>()?;
    let data = safetensors::serialize(views, Some(metadata.clone()))
        .map_err(|e| Error::file(path, format!("cannot serialise checkpoint: {e}")))?;
    let data = canonical_header(data)
        .map_err(|e| Error::file(path, format!("cannot serialise checkpoint: {e}")))?;
    atomic_write(path, &data)
}

/// The same safetensors bytes with the JSON header's keys sorted (tensors and
/// `__metadata__`): safetensors writes its metadata `HashMap` in a random order, so the same
/// checkpoint would otherwise differ from run to run. Offsets are untouched.
fn canonical_header(data: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    use serde_json::Value;
    use std::collections::BTreeMap;
    fn sorted(v: Value) -> Value {
        match v {
            Value::Object(m) => {
                let b: BTreeMap<String, Value> =
                    m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                serde_json::to_value(b).unwrap_or(Value::Null)
            }
            v => v,
        }
    }
    let n = data
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .filter(|&n| 8 + n <= data.len())
        .ok_or("bad header length")?;
    let header: Value = serde_json::from_slice(&data[8..8 + n]).map_err(|e| e.to_string())?;
    let header = sorted(header);
    // Sorted through a BTreeMap even if serde_json keeps insertion order (preserve_order).
    let text = match &header {
        Value::Object(m) => {
            let b: BTreeMap<&String, &Value> = m.iter().collect();
            serde_json::to_string(&b).map_err(|e| e.to_string())?
        }
        _ => return Err("the header is not a JSON object".into()),
    };
    let mut head = text.into_bytes();
    head.resize(head.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + head.len() + data.len() - 8 - n);
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&data[8 + n..]);
    Ok(out)
}

/// Temporary files [`atomic_write`] names for `path`: `.<name>.<random>.tmp` beside it.
fn temp_prefix(path: &Path) -> String {
    format!(
        ".{}.",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
}

/// Remove the temporary files a killed [`atomic_write`] of `names` left in `dir` (and the
/// `.tmpXXXXXX` files of versions before they were named). Returns what was removed.
pub fn remove_stale_temporaries(dir: &Path, names: &[&str]) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let prefixes: Vec<String> = names.iter().map(|n| temp_prefix(Path::new(n))).collect();
    let mut removed = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = prefixes
            .iter()
            .any(|p| name.starts_with(p.as_str()) && name.ends_with(".tmp"));
        let legacy = name.len() == 10
            && name.starts_with(".tmp")
            && name[4..].chars().all(|c| c.is_ascii_alphanumeric());
        if (ours || legacy) && e.path().is_file() && std::fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed.sort();
    removed
}

/// Write bytes to `path` through a temporary file in the same folder and a rename.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::file(dir, format!("cannot create folder: {e}")))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(path))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::file(dir, format!("cannot create a temporary file: {e}")))?;
    tmp.write_all(data)
        .map_err(|e| Error::file(path, format!("cannot write: {e}")))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::file(path, format!("cannot flush: {e}")))?;
    tmp.persist(path)
        .map_err(|e| Error::file(path, format!("cannot rename into place: {e}")))?;
    Ok(())
}

/// The model configuration of a checkpoint: from its metadata, else from its tensors.
pub fn infer_config(c: &Contents, path: &Path) -> Result<ModelConfig> {
    if let Some(j) = c.metadata.get(META_MODEL) {
        return serde_json::from_str(j)
            .map_err(|e| Error::file(path, format!("bad {META_MODEL} metadata: {e}")));
    }
    let shape = |k: &str| c.tensors.get(k).map(|(_, s)| s.clone());
    let out = shape("decoder.out_conv.weight").ok_or_else(|| {
        Error::file(
            path,
            "not an SS-Net checkpoint: no 'decoder.out_conv.weight'",
        )
    })?;
    let (arch, first) = if let Some(s) = shape("encoder.block_one.conv.0.weight") {
        (Arch::VNet, s)
    } else if let Some(s) = shape("encoder.in_conv.conv_conv.0.weight") {
        (Arch::UNet, s)
    } else {
        return Err(Error::file(
            path,
            "neither a VNet nor a UNet checkpoint (unknown encoder tensors)",
        ));
    };
    Ok(ModelConfig {
        arch,
        in_channels: first[1],
        num_classes: out[0],
    })
}

impl Model {
    /// Load a checkpoint (ours, a converted PyTorch state_dict, or a golden `*_init`).
    pub fn load(gpu: &Arc<Gpu>, path: &Path) -> Result<Model> {
        let c = read(path)?;
        let cfg = infer_config(&c, path)?;
        let specs = spec::specs(cfg)?;
        for s in &specs {
            if let Some((_, shape)) = c.tensors.get(&s.name) {
                if *shape != s.shape {
                    return Err(Error::file(
                        path,
                        format!(
                            "tensor '{}' has shape {shape:?}, a {} model needs {:?}",
                            s.name,
                            cfg.arch.name(),
                            s.shape
                        ),
                    ));
                }
            }
        }
        check_finite(c.tensors.iter().map(|(k, (v, _))| (k, v))).map_err(|m| {
            Error::file(
                path,
                format!("{m}; refusing this checkpoint (use an earlier one)"),
            )
        })?;
        // `ssnet train`'s last.safetensors also holds the optimiser state: skip it.
        let values = c
            .tensors
            .into_iter()
            .filter(|(k, _)| !k.starts_with("momentum.") && !k.starts_with("memory."))
            .map(|(k, (v, _))| (k, v))
            .collect();
        Model::from_values(gpu, cfg, specs, values).map_err(|e| Error::file(path, e))
    }

    /// Save weights and buffers (plus any `extra` tensors and metadata) atomically.
    pub fn save(
        &self,
        path: &Path,
        extra: &BTreeMap<String, (Vec<f32>, Vec<usize>)>,
        meta: &HashMap<String, String>,
    ) -> Result<()> {
        let mut tensors = extra.clone();
        let state = self.state()?;
        for s in self.specs() {
            tensors.insert(s.name.clone(), (state[&s.name].clone(), s.shape.clone()));
        }
        let mut metadata = meta.clone();
        metadata.insert(
            META_MODEL.to_string(),
            serde_json::to_string(&self.cfg).unwrap_or_default(),
        );
        write(path, &tensors, &metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverged_or_non_finite_weights_are_named() {
        let t = |name: &str, v: f32| (name.to_string(), vec![0.5, v]);
        let ok = [t("a.weight", 2.0), t("bn.running_var", 1e9)];
        check_finite(ok.iter().map(|(k, v)| (k, v))).unwrap();
        let big = [t("a.weight", 2.0), t("b.weight", -3e7)];
        let e = check_finite(big.iter().map(|(k, v)| (k, v))).unwrap_err();
        assert!(e.contains("'b.weight'") && e.contains("diverged"), "{e}");
        let nan = [t("c.bias", f32::INFINITY)];
        let e = check_finite(nan.iter().map(|(k, v)| (k, v))).unwrap_err();
        assert!(
            e.contains("'c.bias'") && e.contains("NaN or infinite"),
            "{e}"
        );
    }
}
