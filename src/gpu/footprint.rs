//! What one pipeline needs of the device, read from its shader by naga with the override
//! constants applied: workgroup memory (WebGPU's count: each variable the entry point uses,
//! rounded up to 16 bytes), invocations per workgroup and storage buffers per stage. wgpu 30
//! does not check the first against `max_compute_workgroup_storage_size`, so the engine does:
//! tile plans only pick tiles that fit, and a pipeline that would not fit is refused with the
//! limit named (never handed to a driver that would fail or misbehave on it).

use super::{Gpu, Shader};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The needs of one (shader, entry point, constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    pub workgroup_bytes: u32,
    pub invocations: u32,
    pub storage_buffers: u32,
}

type Parsed = Arc<(naga::Module, naga::valid::ModuleInfo)>;
type Key = (Shader, String, Vec<(String, u64)>);

fn parsed(shader: Shader) -> Result<Parsed> {
    static MODULES: OnceLock<Mutex<HashMap<Shader, Parsed>>> = OnceLock::new();
    let mut m = MODULES.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = m.get(&shader) {
        return Ok(p.clone());
    }
    let src = shader.source();
    let module = naga::front::wgsl::parse_str(&src)
        .map_err(|e| Error::gpu(format!("shader {}: {}", shader.file(), e.message())))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| Error::gpu(format!("shader {}: {}", shader.file(), e.as_inner())))?;
    let p = Arc::new((module, info));
    m.insert(shader, p.clone());
    Ok(p)
}

/// The footprint of `entry` of `shader` with `constants` (computed once per process).
pub fn footprint(shader: Shader, entry: &str, constants: &[(&str, f64)]) -> Result<Footprint> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Footprint>>> = OnceLock::new();
    let key: Key = (
        shader,
        entry.to_string(),
        constants
            .iter()
            .map(|&(k, v)| (k.to_string(), v.to_bits()))
            .collect(),
    );
    if let Some(f) = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .get(&key)
    {
        return Ok(*f);
    }
    let what = || format!("{}::{entry} {constants:?}", shader.file());
    let p = parsed(shader)?;
    let mut consts = naga::back::PipelineConstants::default();
    for &(k, v) in constants {
        consts.insert(k.to_string(), v);
    }
    let stage = naga::ShaderStage::Compute;
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &p.0,
        &p.1,
        Some((stage, entry)),
        &consts,
    )
    .map_err(|e| Error::gpu(format!("pipeline {}: {e}", what())))?;
    let (index, ep) = module
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, e)| e.name == entry)
        .ok_or_else(|| Error::gpu(format!("pipeline {}: no such entry point", what())))?;
    let uses = info.get_entry_point(index);
    let mut f = Footprint {
        workgroup_bytes: 0,
        invocations: ep.workgroup_size.iter().product(),
        storage_buffers: 0,
    };
    for (h, g) in module.global_variables.iter() {
        if uses[h].is_empty() {
            continue;
        }
        match g.space {
            naga::AddressSpace::WorkGroup => {
                let size = module.types[g.ty]
                    .inner
                    .try_size(module.to_ctx())
                    .ok_or_else(|| {
                        Error::gpu(format!("pipeline {}: workgroup variable too large", what()))
                    })?;
                f.workgroup_bytes += size.div_ceil(16) * 16;
            }
            naga::AddressSpace::Storage { .. } => f.storage_buffers += 1,
            _ => {}
        }
    }
    CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .insert(key, f);
    Ok(f)
}

impl Gpu {
    /// Whether the pipeline fits this device's workgroup-memory, invocation and
    /// storage-buffer limits; `Err` names the first limit it exceeds.
    pub fn check_footprint(
        &self,
        shader: Shader,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> Result<()> {
        let f = footprint(shader, entry, constants)?;
        let l = &self.limits;
        for (need, have, limit, unit) in [
            (
                f.workgroup_bytes,
                l.max_compute_workgroup_storage_size,
                "max_compute_workgroup_storage_size",
                "bytes of workgroup memory",
            ),
            (
                f.invocations,
                l.max_compute_invocations_per_workgroup,
                "max_compute_invocations_per_workgroup",
                "invocations per workgroup",
            ),
            (
                f.storage_buffers,
                l.max_storage_buffers_per_shader_stage,
                "max_storage_buffers_per_shader_stage",
                "storage buffers",
            ),
        ] {
            if need > have {
                return Err(Error::gpu(format!(
                    "pipeline {}::{entry} {constants:?} needs {need} {unit}, the device offers {have} ({limit}{})",
                    shader.file(),
                    self.limits_note()
                )));
            }
        }
        Ok(())
    }
}
