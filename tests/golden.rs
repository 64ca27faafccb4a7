//! Golden parity with the reference PyTorch SS-Net (fixtures in `SSNET_GOLDEN_DIR`, default
//! `../shared/golden`). One test per fixture, named `<folder>__<stem>` with `.` and `-` turned
//! into `_`. Each prints, per compared tensor, the errors and the tolerance.
//!
//! The tests of each area live in `tests/golden/<area>.rs`, included here so that every test
//! sits at the top level of this target under its fixture's name.
//!
//! The rule (`ssnet::golden::parity`): each tensor within max(the README's tolerance below,
//! K = 10 × the reference's own float32 error `f32.<key>` on the tensor's group). Every row
//! prints our error, the reference's float32 error, the tolerance and their ratio; every
//! fixture ends with one line giving its worst ratio.
#![allow(non_snake_case)]

use ssnet::golden::Fixture;

/// Tolerances of `../shared/golden/README.md` (widened to K × the reference's float32 error
/// where that is larger).
#[allow(dead_code)]
mod tol {
    /// Single ops, forward and gradients: relative L2.
    pub const OP: f64 = 1e-5;
    /// 3D convolutions' weight gradients.
    pub const CONV3D_GW: f64 = 1e-4;
    /// Whole models and one training iteration: loss terms.
    pub const LOSS: f64 = 1e-4;
    /// Whole models: summaries, relative to sum|v|.
    pub const SUMMARY: f64 = 1e-3;
    /// The second iteration of `iteration*d`.
    pub const SECOND_ITER: f64 = 5e-3;
    /// Metrics (f64 on the CPU).
    pub const METRIC: f64 = 1e-6;
}

include!("golden/ops.rs");
include!("golden/conv.rs");
include!("golden/norm.rs");
include!("golden/eval.rs");
include!("golden/infer.rs");
include!("golden/ssnet.rs");

/// Every fixture on disk must have a test of its name in this binary; lists those that do
/// not, and fails when `SSNET_GOLDEN_REQUIRE_ALL=1`.
#[test]
fn coverage() {
    let dir = ssnet::golden::golden_dir();
    assert!(
        dir.is_dir(),
        "golden fixture directory {} not found (set SSNET_GOLDEN_DIR)",
        dir.display()
    );
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--list", "--format", "terse"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    let tests: std::collections::HashSet<&str> = listed
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .collect();
    let mut missing = vec![];
    let mut folders: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    folders.sort_by_key(|e| e.file_name());
    for f in folders {
        let folder = f.file_name().to_string_lossy().to_string();
        let mut files: Vec<_> = std::fs::read_dir(f.path()).unwrap().flatten().collect();
        files.sort_by_key(|e| e.file_name());
        for file in files {
            let name = file.file_name().to_string_lossy().to_string();
            let Some(stem) = name.strip_suffix(".safetensors") else {
                continue;
            };
            // The *_init fixtures are starting weights that other fixtures load, not tests.
            if stem.ends_with("_init") {
                continue;
            }
            let test = format!("{folder}__{}", stem.replace(['.', '-'], "_"));
            if !tests.contains(test.as_str()) {
                missing.push(test);
            }
        }
    }
    println!(
        "fixtures without a test: {}",
        if missing.is_empty() {
            "none".to_string()
        } else {
            missing.join(", ")
        }
    );
    if std::env::var("SSNET_GOLDEN_REQUIRE_ALL").as_deref() == Ok("1") {
        assert!(
            missing.is_empty(),
            "SSNET_GOLDEN_REQUIRE_ALL=1 and {} fixtures have no test: {}",
            missing.len(),
            missing.join(", ")
        );
    }
}
