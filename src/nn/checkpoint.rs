//! safetensors checkpoints keyed by the reference's state_dict names. A checkpoint converted
//! from a PyTorch SS-Net or AD-MT `.pth` (tools/pth_to_safetensors.py) or the golden `*_init`
//! fixtures load as they are: the architecture and the variant (with or without SS-Net's
//! heads, ADMT.md §2) are read from the metadata when present, else inferred from the tensor
//! names and shapes.
//!
//! Writes go to a temporary file in the target folder, flushed, then renamed over the target:
//! a kill at any moment leaves either the old file or the new one, never a torn one.

use super::{spec, Arch, Model, ModelConfig, Variant};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// Metadata key holding the model configuration as JSON.
pub const META_MODEL: &str = "ssnet.model";
/// Metadata key holding the variant (`ssnet` or `admt`); absent = inferred from the names.
pub const META_VARIANT: &str = "ssnet.variant";

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

/// Write f32 tensors and metadata atomically (temporary file + rename). The bytes depend on
/// the contents only: tensors in name order, metadata keys sorted (the safetensors crate
/// writes its metadata map in hash order, which would make two saves of one state differ).
pub fn write(
    path: &Path,
    tensors: &BTreeMap<String, (Vec<f32>, Vec<usize>)>,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    atomic_write(path, &serialize(tensors, metadata)?)
}

/// The safetensors bytes of f32 tensors and metadata, deterministic: an 8-byte little-endian
/// header length, the JSON header (`__metadata__` with sorted keys, then each tensor's dtype,
/// shape and data offsets, in name order) padded with spaces to a multiple of 8, the data.
pub fn serialize(
    tensors: &BTreeMap<String, (Vec<f32>, Vec<usize>)>,
    metadata: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let sorted: BTreeMap<&String, &String> = metadata.iter().collect();
        header.insert(
            "__metadata__".to_string(),
            serde_json::to_value(sorted).map_err(|e| Error::msg(e.to_string()))?,
        );
    }
    let mut offset = 0usize;
    for (k, (v, shape)) in tensors {
        if v.len() != shape.iter().product::<usize>() {
            return Err(Error::msg(format!(
                "tensor '{k}': {} values for shape {shape:?}",
                v.len()
            )));
        }
        let end = offset + 4 * v.len();
        header.insert(
            k.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    // serde_json's Map keeps insertion order only with `preserve_order`; either way the
    // order is a function of the contents (sorted or inserted in name order).
    let mut head = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| Error::msg(e.to_string()))?;
    head.resize(head.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + head.len() + offset);
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    for (v, _) in tensors.values() {
        out.extend_from_slice(bytemuck::cast_slice::<f32, u8>(v));
    }
    Ok(out)
}

/// Moved to [`crate::fsutil`] (a lower floor: `gpu::tune` uses it too); kept here by name.
pub use crate::fsutil::{atomic_write, remove_stale_temporaries};

/// The model configuration of a checkpoint: from its metadata, else from its tensors.
pub fn infer_config(c: &Contents, path: &Path) -> Result<ModelConfig> {
    if let Some(j) = c.metadata.get(META_MODEL) {
        return serde_json::from_str(j)
            .map_err(|e| Error::file(path, format!("bad {META_MODEL} metadata: {e}")));
    }
    let shape = |k: &str| c.tensors.get(k).map(|(_, s)| s.clone());
    let out = shape("decoder.out_conv.weight")
        .or_else(|| shape("out_conv.weight"))
        .ok_or_else(|| {
            Error::file(
                path,
                "not an SS-Net or AD-MT checkpoint: no 'decoder.out_conv.weight' nor 'out_conv.weight'",
            )
        })?;
    let (arch, first) = if let Some(s) = shape("encoder.block_one.conv.0.weight") {
        (Arch::VNet, s)
    } else if let Some(s) = shape("block_one.conv.0.weight") {
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

/// The variant of a checkpoint: from its metadata, else from its names: AD-MT's VNet has
/// flat keys (`block_one.…`); a UNet without `projection_head` is AD-MT's.
pub fn infer_variant(c: &Contents, path: &Path) -> Result<Variant> {
    if let Some(v) = c.metadata.get(META_VARIANT) {
        return serde_json::from_value(serde_json::Value::String(v.clone())).map_err(|_| {
            Error::file(
                path,
                format!("bad {META_VARIANT} metadata '{v}' (ssnet or admt)"),
            )
        });
    }
    let has = |k: &str| c.tensors.contains_key(k);
    Ok(
        if has("block_one.conv.0.weight")
            || (has("encoder.in_conv.conv_conv.0.weight") && !has("projection_head.0.weight"))
        {
            Variant::Admt
        } else {
            Variant::SsNet
        },
    )
}

impl Model {
    /// Load a checkpoint (ours, a converted PyTorch state_dict, or a golden `*_init`).
    pub fn load(gpu: &Arc<Gpu>, path: &Path) -> Result<Model> {
        let c = read(path)?;
        let cfg = infer_config(&c, path)?;
        let variant = infer_variant(&c, path)?;
        Self::from_contents(gpu, c, cfg, variant, path)
    }

    /// A model of `variant` from checkpoint contents; tensors under the `momentum.` and
    /// `memory.` prefixes (SS-Net trainer state) are skipped.
    fn from_contents(
        gpu: &Arc<Gpu>,
        c: Contents,
        cfg: ModelConfig,
        variant: Variant,
        path: &Path,
    ) -> Result<Model> {
        let specs = spec::specs_of(cfg, variant)?;
        for s in &specs {
            if let Some((_, shape)) = c.tensors.get(&s.name) {
                if *shape != s.shape {
                    return Err(Error::file(
                        path,
                        format!(
                            "tensor '{}' has shape {shape:?}, a {} {} model needs {:?}",
                            s.name,
                            variant.name(),
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
        Model::from_values_as(gpu, cfg, variant, specs, values).map_err(|e| Error::file(path, e))
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
        metadata.insert(META_VARIANT.to_string(), self.variant().name().to_string());
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
