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
use std::path::Path;
use std::sync::Arc;

/// Metadata key holding the model configuration as JSON.
pub const META_MODEL: &str = "ssnet.model";

/// Tensors (f32, with shapes) and string metadata of a safetensors file.
pub struct Contents {
    pub tensors: BTreeMap<String, (Vec<f32>, Vec<usize>)>,
    pub metadata: HashMap<String, String>,
}

/// Read every tensor of a safetensors file as f32 (F32 as is; U8/I64/F64 converted).
pub fn read(path: &Path) -> Result<Contents> {
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
    atomic_write(path, &data)
}

/// Moved to [`crate::fsutil`] (a lower floor: `gpu::tune` uses it too); kept here by name.
pub use crate::fsutil::atomic_write;

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
