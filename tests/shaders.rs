//! Every WGSL file under shaders/ belongs to a module of `Shader::ALL`, and every module passes
//! naga's parser and validator (no GPU needed). Each module declares its uniform params at
//! binding 0. The matrix-unit module is also translated to SPIR-V, as wgpu does on Vulkan:
//! no adapter here has cooperative matrices, so this is where its translation is checked.

use ssnet::gpu::Shader;
use std::collections::HashSet;

fn validate(name: &str, src: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    let mut v = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    );
    let info = v
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    (module, info)
}

#[test]
fn every_shader_file_is_registered_and_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let used: HashSet<&str> = Shader::ALL
        .iter()
        .flat_map(|s| s.parts().iter().map(|p| p.0))
        .collect();
    let mut on_disk = vec![];
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) == Some("wgsl") {
            on_disk.push(p.file_name().unwrap().to_string_lossy().to_string());
        }
    }
    on_disk.sort();
    assert!(!on_disk.is_empty(), "no shaders found in {}", dir.display());
    for f in &on_disk {
        assert!(
            used.contains(f.as_str()),
            "shaders/{f} is not part of any module in src/gpu/shaders.rs"
        );
    }
    for s in Shader::ALL {
        for (name, text) in s.parts() {
            let disk =
                std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                &disk, text,
                "{name}: compiled-in source differs from the file"
            );
        }
        let src = s.source();
        let (m, _) = validate(s.file(), &src);
        assert!(
            !m.entry_points.is_empty(),
            "{} has no entry point",
            s.file()
        );
        // The params contract: a uniform at group 0 binding 0.
        let has_params = m.global_variables.iter().any(|(_, g)| {
            g.space == naga::AddressSpace::Uniform
                && g.binding
                    .as_ref()
                    .is_some_and(|b| b.group == 0 && b.binding == 0)
        });
        assert!(
            has_params,
            "{}: no uniform params at @group(0) @binding(0)",
            s.file()
        );
    }
}

/// The two back-ends of the matrix-unit GEMM export the same entry points.
#[test]
fn matrix_unit_backends_share_entry_points() {
    let names = |s: Shader| {
        let (m, _) = validate(s.file(), &s.source());
        let mut v: Vec<String> = m.entry_points.iter().map(|e| e.name.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(names(Shader::ConvMma), names(Shader::ConvMmaEmulated));
    for e in ["conv_mma", "wgrad_mma", "mma_absmax", "mma_scales"] {
        assert!(names(Shader::ConvMma).contains(&e.to_string()), "{e}");
    }
}

/// The cooperative-matrix module translates to SPIR-V with every tile configuration the Rust
/// side uses (the override constants resolved as a pipeline does).
#[test]
fn cooperative_matrix_module_translates_to_spirv() {
    let src = Shader::ConvMma.source();
    let (module, info) = validate("conv_mma (coop)", &src);
    let cases = ssnet::ops::MMA_TILES
        .iter()
        .map(|t| ("conv_mma", t))
        .chain(ssnet::ops::WGRAD_MMA_TILES.iter().map(|t| ("wgrad_mma", t)));
    for (entry, &(sgm, sgn, tm, tn)) in cases {
        let mut constants = naga::back::PipelineConstants::default();
        for (k, v) in [
            ("SGM".to_string(), sgm as f64),
            ("SGN".to_string(), sgn as f64),
            ("TM".to_string(), tm as f64),
            ("TN".to_string(), tn as f64),
        ] {
            constants.insert(k, v);
        }
        let (m, i) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((naga::ShaderStage::Compute, entry)),
            &constants,
        )
        .unwrap_or_else(|e| panic!("overrides {entry} {sgm}x{sgn}x{tm}x{tn}: {e:?}"));
        let opts = naga::back::spv::Options {
            lang_version: (1, 3),
            ..Default::default()
        };
        let pipe = naga::back::spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: entry.to_string(),
        };
        let words = naga::back::spv::write_vec(&m, &i, &opts, Some(&pipe))
            .unwrap_or_else(|e| panic!("SPIR-V for tiles {entry} {sgm}x{sgn}x{tm}x{tn}: {e:?}"));
        assert!(words.len() > 100, "SPIR-V suspiciously short");
        assert_eq!(words[0], 0x0723_0203, "not a SPIR-V module");
        // OpCooperativeMatrixMulAddKHR (opcode 4459) must be there: the products really go
        // through the matrix units.
        assert!(
            words.iter().any(|w| w & 0xffff == 4459),
            "no OpCooperativeMatrixMulAddKHR in the SPIR-V of tiles {entry} {sgm}x{sgn}x{tm}x{tn}"
        );
        if let Ok(dir) = std::env::var("SSNET_DUMP_SPIRV") {
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            std::fs::write(format!("{dir}/{entry}_{sgm}x{sgn}x{tm}x{tn}.spv"), bytes).unwrap();
        }
    }
}
