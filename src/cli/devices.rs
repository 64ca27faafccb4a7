//! `ssnet devices`: every adapter wgpu can see.
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

pub fn run(a: DevicesArgs) -> crate::Result<()> {
    let list = crate::gpu::list_adapters();
    if list.is_empty() {
        return Err(crate::Error::gpu(
            "no GPU adapter found: install your GPU's Vulkan/Metal/DX12 driver, or Mesa's software Vulkan driver (apt-get install mesa-vulkan-drivers libvulkan1)",
        ));
    }
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
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    for r in &list {
        println!(
            "[{}] {} ({}, {})",
            r.index, r.name, r.backend, r.device_type
        );
        println!(
            "    driver: {}",
            if r.driver.is_empty() { "-" } else { &r.driver }
        );
        println!(
            "    max storage binding {}, max buffer {}, workgroup storage {} KiB, {} invocations/workgroup",
            human(r.max_storage_binding),
            human(r.max_buffer_size),
            r.max_workgroup_storage / 1024,
            r.max_invocations
        );
        let coop = if r.cooperative_matrix > 0 {
            format!(" ({} cooperative-matrix configs)", r.cooperative_matrix)
        } else {
            String::new()
        };
        println!(
            "    features: {}{coop}",
            if r.features.is_empty() {
                "-".to_string()
            } else {
                r.features.join(", ")
            }
        );
    }
    Ok(())
}
