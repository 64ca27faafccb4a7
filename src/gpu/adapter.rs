//! Adapter choice: the wgpu instance, every adapter it sees (`ssnet devices`), and the pick
//! by index, name or kind.

use crate::error::{Error, Result};

/// How to get an adapter when there is none: printed in the error.
const NO_ADAPTER_HINT: &str = "no GPU adapter found: install your GPU's Vulkan/Metal/DX12 driver, \
or Mesa's software Vulkan driver (Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1)";

/// One adapter as `ssnet devices` reports it.
#[derive(Debug, Clone)]
pub struct AdapterReport {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_binding: u64,
    pub max_buffer_size: u64,
    pub max_workgroup_storage: u32,
    pub max_invocations: u32,
    pub max_storage_buffers_per_stage: u32,
    pub max_workgroups_per_dimension: u32,
    pub features: Vec<&'static str>,
    pub cooperative_matrix: usize,
    /// The tensor-core path: its tile (`16x16x16` / `8x8x8`), or why not.
    pub tensor_cores: std::result::Result<&'static str, String>,
    /// SHADER_F16: the emulated tensor-core path (a correctness check) can run.
    pub shader_f16: bool,
    /// TIMESTAMP_QUERY: `ssnet bench` reports GPU time, tuning can time candidates.
    pub timestamps: bool,
    /// Subgroup sizes the adapter may use (min, max lanes).
    pub subgroup_sizes: (u32, u32),
}

pub(super) fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if std::env::var_os("WGPU_BACKEND").is_none() {
        desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    }
    wgpu::Instance::new(desc)
}

pub(super) fn adapters(inst: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
}

fn features_of_interest(f: wgpu::Features) -> Vec<&'static str> {
    let mut v = vec![];
    for (flag, name) in [
        (wgpu::Features::SHADER_F16, "SHADER_F16"),
        (wgpu::Features::SUBGROUP, "SUBGROUP"),
        (wgpu::Features::TIMESTAMP_QUERY, "TIMESTAMP_QUERY"),
        (
            wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
            "TIMESTAMP_QUERY_INSIDE_PASSES",
        ),
        (
            wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
            "EXPERIMENTAL_COOPERATIVE_MATRIX",
        ),
    ] {
        if f.contains(flag) {
            v.push(name);
        }
    }
    v
}

fn report(index: usize, a: &wgpu::Adapter) -> AdapterReport {
    let info = a.get_info();
    let l = a.limits();
    AdapterReport {
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        max_storage_binding: l.max_storage_buffer_binding_size,
        max_buffer_size: l.max_buffer_size,
        max_workgroup_storage: l.max_compute_workgroup_storage_size,
        max_invocations: l.max_compute_invocations_per_workgroup,
        max_storage_buffers_per_stage: l.max_storage_buffers_per_shader_stage,
        max_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
        features: features_of_interest(a.features()),
        cooperative_matrix: super::matrix_units::reported_configs(a).len(),
        tensor_cores: super::matrix_units::cooperative_matrix_support(a).map(|s| s.name()),
        shader_f16: a.features().contains(wgpu::Features::SHADER_F16),
        timestamps: a.features().contains(wgpu::Features::TIMESTAMP_QUERY),
        subgroup_sizes: (info.subgroup_min_size, info.subgroup_max_size),
    }
}

/// Every adapter wgpu can see (for `ssnet devices`).
pub fn list_adapters() -> Vec<AdapterReport> {
    let inst = instance();
    adapters(&inst)
        .iter()
        .enumerate()
        .map(|(i, a)| report(i, a))
        .collect()
}

/// Pick an adapter: `selector` is an index or a case-insensitive name substring; without one,
/// the first discrete GPU, else integrated, else any (a CPU rasteriser last).
pub(super) fn choose(
    adapters: Vec<wgpu::Adapter>,
    selector: Option<&str>,
) -> Result<wgpu::Adapter> {
    if adapters.is_empty() {
        return Err(Error::gpu(NO_ADAPTER_HINT));
    }
    let names = || {
        adapters
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{i}: {}", a.get_info().name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match selector.map(str::trim).filter(|s| !s.is_empty()) {
        Some(sel) => {
            if let Ok(i) = sel.parse::<usize>() {
                let n = adapters.len();
                return adapters.into_iter().nth(i).ok_or_else(|| {
                    Error::gpu(format!(
                        "--device {i}: only {n} adapters ({})",
                        "see `ssnet devices`"
                    ))
                });
            }
            let low = sel.to_lowercase();
            let list = names();
            adapters
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&low))
                .ok_or_else(|| {
                    Error::gpu(format!("--device '{sel}' matches no adapter (have {list})"))
                })
        }
        None => {
            let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                wgpu::DeviceType::VirtualGpu => 2,
                wgpu::DeviceType::Other => 3,
                wgpu::DeviceType::Cpu => 4,
            };
            let mut v = adapters;
            v.sort_by_key(rank);
            Ok(v.into_iter().next().expect("non-empty"))
        }
    }
}
