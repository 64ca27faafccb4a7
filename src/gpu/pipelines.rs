//! The pipeline cache: one shader module per [`Shader`], one compute pipeline per (shader,
//! entry point, override constants), each compiled once inside an error scope.

use super::{Gpu, Shader};
use crate::error::{Error, Result};
use std::sync::Arc;

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(super) struct PipelineKey {
    pub(super) shader: Shader,
    pub(super) entry: &'static str,
    /// Override constants, as (name, value bits) so the key is hashable.
    pub(super) constants: Vec<(&'static str, u64)>,
}

impl Gpu {
    fn module(&self, shader: Shader) -> Result<Arc<wgpu::ShaderModule>> {
        let mut m = self.modules.lock().unwrap();
        if let Some(x) = m.get(&shader) {
            return Ok(x.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.file()),
                source: wgpu::ShaderSource::Wgsl(shader.source()),
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::gpu(format!("shader {}: {e}", shader.file())));
        }
        let module = Arc::new(module);
        m.insert(shader, module.clone());
        Ok(module)
    }

    pub(super) fn pipeline(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = PipelineKey {
            shader,
            entry,
            constants: constants.iter().map(|&(k, v)| (k, v.to_bits())).collect(),
        };
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        if std::env::var("SSNET_DEBUG_PIPELINES").as_deref() == Ok("1") {
            eprintln!("ssnet: compiling pipeline {key:?}");
        }
        // wgpu does not check workgroup memory against the limit: refuse here, naming it.
        self.check_footprint(shader, entry, constants)?;
        let module = self.module(shader)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let p = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::gpu(format!(
                "pipeline {}::{entry}: {e}",
                shader.file()
            )));
        }
        super::registry::record(shader, entry, constants);
        let p = Arc::new(p);
        self.pipelines.lock().unwrap().insert(key, p.clone());
        Ok(p)
    }
}
