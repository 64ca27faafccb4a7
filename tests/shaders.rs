//! Every WGSL file under shaders/ is registered in `Shader::ALL` and passes naga's parser
//! and validator (no GPU needed). Each entry point declares its uniform params at binding 0.

use ssnet::gpu::Shader;
use std::collections::HashSet;

fn validate(name: &str, src: &str) -> naga::Module {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    let mut v = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    );
    if let Err(e) = v.validate(&module) {
        panic!("{name}: {}", e.emit_to_string(src));
    }
    module
}

#[test]
fn every_shader_file_is_registered_and_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let registered: HashSet<&str> = Shader::ALL.iter().map(|s| s.file()).collect();
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
            registered.contains(f.as_str()),
            "shaders/{f} is not registered in src/gpu/shaders.rs"
        );
    }
    for s in Shader::ALL {
        let src = std::fs::read_to_string(dir.join(s.file()))
            .unwrap_or_else(|e| panic!("{}: {e}", s.file()));
        assert_eq!(
            src,
            s.source(),
            "{}: compiled-in source differs from the file",
            s.file()
        );
        let m = validate(s.file(), &src);
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
