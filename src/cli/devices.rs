//! `ssnet devices`: every adapter wgpu can see, the paths the engine gets on it (f32, tensor
//! cores and their tile, GPU timestamps, subgroup sizes) and the limits that constrain the
//! engine, against what the engine needs (its pipelines' footprints, read from the shaders,
//! and the largest tensor of the full training configurations).
use crate::gpu::footprint::footprint;
use crate::gpu::{AdapterReport, Shader};
use crate::ops;
use clap::Args;

#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn human(bytes: u64) -> String {
    const G: f64 = (1u64 << 30) as f64;
    const M: f64 = (1u64 << 20) as f64;
    if bytes as f64 >= G {
        format!("{:.1} GiB", bytes as f64 / G)
    } else {
        format!("{:.0} MiB", bytes as f64 / M)
    }
}

/// What the engine needs of a device.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Needs {
    /// Workgroup memory of the f32 path's largest pipeline (every tile of every kernel).
    pub f32_workgroup_bytes: u32,
    /// Workgroup memory the tensor-core path needs at least (its smallest forward and
    /// weight-gradient tiles).
    pub tensor_core_workgroup_bytes: u32,
    /// Storage buffers per stage and invocations per workgroup of the largest pipeline.
    pub storage_buffers: u32,
    pub invocations: u32,
    /// The largest tensor of full LA training (VNet, the reference's batch 2+2 of
    /// 112×112×80: the 16-channel full-resolution activations).
    pub la_train_binding: u64,
    /// The largest tensor of full ACDC training (UNet, batch 12+12 of 256×256: the top
    /// decoder level's concatenation, 32 channels at full resolution).
    pub acdc_train_binding: u64,
}

impl Needs {
    pub fn compute() -> crate::Result<Needs> {
        let mut n = Needs {
            f32_workgroup_bytes: 0,
            tensor_core_workgroup_bytes: 0,
            storage_buffers: 0,
            invocations: 0,
            la_train_binding: 4 * 16 * 112 * 112 * 80 * 4,
            acdc_train_binding: 24 * 32 * 256 * 256 * 4,
        };
        let gemm =
            |t: (u32, u32, u32)| vec![("BM", t.0 as f64), ("BN", t.1 as f64), ("BK", t.2 as f64)];
        let mut add = |s: Shader, e: &str, c: &[(&str, f64)]| -> crate::Result<u32> {
            let f = footprint(s, e, c)?;
            n.storage_buffers = n.storage_buffers.max(f.storage_buffers);
            n.invocations = n.invocations.max(f.invocations);
            Ok(f.workgroup_bytes)
        };
        let mut f32_bytes = 0;
        for &s in Shader::ALL {
            if !matches!(
                s,
                Shader::ConvMma
                    | Shader::ConvMmaEmulated
                    | Shader::ConvMma8
                    | Shader::ConvMma8Emulated
            ) {
                for e in entry_points(s)? {
                    // The grouped EMA's 8- and 16-pair entry points are taken only where the
                    // adapter offers their storage buffers (ops::ema::ema_slots): the 4-pair
                    // one is what the engine needs.
                    if s == Shader::Ema && e != "ema_group4" {
                        continue;
                    }
                    f32_bytes = f32_bytes.max(add(s, &e, &[])?);
                }
            }
        }
        for t in ops::TILES {
            f32_bytes = f32_bytes.max(add(Shader::Conv, "conv_gemm", &gemm(t))?);
            f32_bytes = f32_bytes.max(add(Shader::ConvTranspose, "ct_gemm", &gemm(t))?);
        }
        for t in ops::WGRAD_TILES {
            let mut c = gemm((t.0, t.1, t.2));
            c.push(("G", t.3 as f64));
            f32_bytes = f32_bytes.max(add(Shader::Conv, "conv_wgrad", &c)?);
        }
        let mma = |t: ops::MmaTile| {
            vec![
                ("SGM", t.0 as f64),
                ("SGN", t.1 as f64),
                ("TM", t.2 as f64),
                ("TN", t.3 as f64),
            ]
        };
        // The path needs one tile of each kernel: the smallest of each.
        let mut tc_bytes = 0;
        for (entry, tiles) in [
            ("conv_mma", ops::MMA_TILES),
            ("wgrad_mma", ops::WGRAD_MMA_TILES),
        ] {
            let mut smallest = u32::MAX;
            for &t in tiles {
                smallest = smallest.min(add(Shader::ConvMma, entry, &mma(t))?);
            }
            tc_bytes = tc_bytes.max(smallest);
        }
        n.f32_workgroup_bytes = f32_bytes;
        n.tensor_core_workgroup_bytes = tc_bytes;
        Ok(n)
    }
}

fn entry_points(s: Shader) -> crate::Result<Vec<String>> {
    let src = s.source();
    let m = naga::front::wgsl::parse_str(&src)
        .map_err(|e| crate::Error::gpu(format!("shader {}: {}", s.file(), e.message())))?;
    Ok(m.entry_points.iter().map(|e| e.name.clone()).collect())
}

fn yes_no(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "no"
    }
}

/// The lines of one adapter.
fn describe(r: &AdapterReport, n: &Needs) -> Vec<String> {
    let tc = match &r.tensor_cores {
        Ok(tile) => format!("yes, f16 {tile} tiles"),
        Err(why) => format!("no ({why})"),
    };
    let timestamps = if r.timestamps {
        "yes (bench reports GPU time; --tune can time tiles)"
    } else {
        "no (bench reports wall clock; no tuning)"
    };
    let fits = |have: u64, need: u64| if have >= need { "ok" } else { "TOO SMALL" };
    vec![
        format!("[{}] {} ({}, {})", r.index, r.name, r.backend, r.device_type),
        format!("    driver: {}", if r.driver.is_empty() { "-" } else { &r.driver }),
        format!(
            "    paths: f32 {}; tensor cores: {tc}; emulated tensor cores: {}; GPU timestamps: {timestamps}; subgroups {}..{} lanes",
            yes_no(r.max_workgroup_storage >= n.f32_workgroup_bytes && r.max_invocations >= n.invocations),
            yes_no(r.shader_f16),
            r.subgroup_sizes.0,
            r.subgroup_sizes.1
        ),
        format!(
            "    storage binding {} (full LA training needs {}: {}; full ACDC training {}: {}), buffer {}",
            human(r.max_storage_binding),
            human(n.la_train_binding),
            fits(r.max_storage_binding, n.la_train_binding),
            human(n.acdc_train_binding),
            fits(r.max_storage_binding, n.acdc_train_binding),
            human(r.max_buffer_size)
        ),
        format!(
            "    workgroup memory {} B (f32 path needs {} B: {}; tensor cores {} B: {}), {} invocations/workgroup (needs {}), {} storage buffers/stage (needs {}), {} workgroups/dimension",
            r.max_workgroup_storage,
            n.f32_workgroup_bytes,
            fits(r.max_workgroup_storage as u64, n.f32_workgroup_bytes as u64),
            n.tensor_core_workgroup_bytes,
            fits(r.max_workgroup_storage as u64, n.tensor_core_workgroup_bytes as u64),
            r.max_invocations,
            n.invocations,
            r.max_storage_buffers_per_stage,
            n.storage_buffers,
            r.max_workgroups_per_dimension
        ),
        format!(
            "    features: {}{}",
            if r.features.is_empty() { "-".to_string() } else { r.features.join(", ") },
            if r.cooperative_matrix > 0 {
                format!(" ({} cooperative-matrix configs)", r.cooperative_matrix)
            } else {
                String::new()
            }
        ),
    ]
}

pub fn run(a: DevicesArgs) -> crate::Result<()> {
    let list = crate::gpu::list_adapters();
    if list.is_empty() {
        return Err(crate::Error::gpu(
            "no GPU adapter found: install your GPU's Vulkan/Metal/DX12 driver, or Mesa's software Vulkan driver (apt-get install mesa-vulkan-drivers libvulkan1)",
        ));
    }
    let needs = Needs::compute()?;
    if a.json {
        let v: Vec<_> = list
            .iter()
            .map(|r| {
                serde_json::json!({
                    "index": r.index, "name": r.name, "backend": r.backend, "type": r.device_type,
                    "driver": r.driver, "max_storage_binding": r.max_storage_binding,
                    "max_buffer_size": r.max_buffer_size, "max_workgroup_storage": r.max_workgroup_storage,
                    "max_invocations_per_workgroup": r.max_invocations, "features": r.features,
                    "cooperative_matrix_configs": r.cooperative_matrix,
                    "max_storage_buffers_per_stage": r.max_storage_buffers_per_stage,
                    "max_workgroups_per_dimension": r.max_workgroups_per_dimension,
                    "tensor_cores": match &r.tensor_cores { Ok(t) => serde_json::json!(t), Err(_) => serde_json::Value::Null },
                    "tensor_cores_unavailable": r.tensor_cores.as_ref().err(),
                    "shader_f16": r.shader_f16, "timestamps": r.timestamps,
                    "subgroup_sizes": [r.subgroup_sizes.0, r.subgroup_sizes.1],
                })
            })
            .collect();
        let out = serde_json::json!({ "adapters": v, "engine_needs": needs });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    for r in &list {
        for l in describe(r, &needs) {
            println!("{l}");
        }
    }
    Ok(())
}
