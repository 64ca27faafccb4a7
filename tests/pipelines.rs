//! Every pipeline the engine creates, on every backend. `tests/pipelines.list` is the set of
//! (shader, entry point, override constants) that a tiny 3D and 2D SS-Net training
//! iteration, two AD-MT steps of each (both strong views, the grouped EMA at every width),
//! inference of both pipelines and the tuning candidates of every tiled kernel
//! (f32 and the emulated tensor-core path on 16×16 and 8×8 tiles) create; `pipelines_created_match_the_committed_list`
//! records them on the test adapter and fails when the list is stale. Regenerate it with
//!
//! ```sh
//! SSNET_UPDATE_PIPELINES=1 cargo test --test pipelines
//! ```
//!
//! `every_listed_pipeline_translates_for_vulkan_metal_and_dx12` needs no GPU: each entry (and
//! each entry point of every module with its default constants) is validated by naga with the
//! constants applied and written as SPIR-V, MSL and HLSL by naga's backends, as wgpu does on
//! Vulkan, Metal and DX12; the cooperative-matrix twins of the emulated tensor-core entries
//! go to SPIR-V and MSL only (wgpu has no DX12 path for cooperative matrices). Where
//! `spirv-val` (Debian: spirv-tools) is installed and new enough for a module, the SPIR-V is
//! validated by it too (`SSNET_REQUIRE_SPIRV_VAL=1` makes its absence a failure, as in CI).

mod common;
use common::*;
use naga::back::pipeline_constants::process_overrides;
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use ssnet::admt::{AdmtConfig, AdmtInputs, AdmtTrainer};
use ssnet::gpu::registry::{created, parse_list, PipelineSpec};
use ssnet::gpu::{Gpu, GpuOptions, MatrixUnits, MmaShape, Shader};
use ssnet::infer::{predict_volume, InferConfig, SliceWise, SlidingWindow, Weighting};
use ssnet::nn::{Arch, Model, ModelConfig};
use ssnet::ops;
use ssnet::reference as r;
use ssnet::ssnet::{StepInputs, Trainer, TrainerConfig};
use ssnet::tensor::Tensor;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

const REGENERATE: &str = "SSNET_UPDATE_PIPELINES=1 cargo test --test pipelines";

fn list_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pipelines.list")
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

/// One SS-Net iteration of `arch` on a batch of one labelled and one unlabelled sample.
fn train_iteration(g: &Arc<Gpu>, arch: Arch, spatial: &[usize], classes: usize) {
    let cfg = ModelConfig {
        arch,
        in_channels: 1,
        num_classes: classes,
    };
    let model = Model::init(g, cfg, 7).unwrap();
    let base = match arch {
        Arch::VNet => TrainerConfig::la(),
        Arch::UNet => TrainerConfig::acdc(),
    };
    let mut t = Trainer::new(
        model,
        TrainerConfig {
            labeled_bs: 1,
            ..base
        },
    );
    let mut xs = vec![2, 1];
    xs.extend_from_slice(spatial);
    let mut ls = vec![1];
    ls.extend_from_slice(spatial);
    let x = upload(g, &r::normal(1, numel(&xs)), &xs);
    let labels: Vec<u32> = (0..numel(&ls)).map(|i| (i % classes) as u32).collect();
    let y = Tensor::from_u32(g, &labels, &ls).unwrap();
    let l = t
        .step(&StepInputs {
            x: &x,
            labels: &y,
            rand_u: None,
            seed: 3,
        })
        .unwrap();
    assert!(l.loss.is_finite(), "{arch:?} step loss {}", l.loss);
}

/// Two AD-MT steps of `arch` with an alternation period of 1 (teacher 1 with the intensity
/// view, then teacher 2 with CutMix), and the grouped EMA's narrower entry points (the step
/// takes the widest this adapter allows).
fn admt_steps(g: &Arc<Gpu>, arch: Arch, spatial: &[usize], classes: usize) {
    let cfg = ModelConfig {
        arch,
        in_channels: 1,
        num_classes: classes,
    };
    let base = match arch {
        Arch::VNet => AdmtConfig::la(),
        Arch::UNet => AdmtConfig::acdc(),
    };
    let mut t = AdmtTrainer::init(
        g,
        cfg,
        AdmtConfig {
            max_period: 1,
            ..base
        },
        5,
    )
    .unwrap();
    let shape = |n: usize| [vec![n, 1], spatial.to_vec()].concat();
    // Two unlabelled samples: the updated teacher's batch statistics need more than one
    // value per channel at VNet's 1×1×1 bottleneck.
    let x = |seed: u64, n: usize| upload(g, &r::normal(seed, numel(&shape(n))), &shape(n));
    let (labeled, weak, strong) = (x(11, 1), x(12, 2), x(13, 2));
    let ls = [vec![1], spatial.to_vec()].concat();
    let labels: Vec<u32> = (0..numel(&ls)).map(|i| (i % classes) as u32).collect();
    let labels = Tensor::from_u32(g, &labels, &ls).unwrap();
    let inputs = AdmtInputs {
        labeled: &labeled,
        labels: &labels,
        weak: &weak,
        strong: &strong,
    };
    let cutmix: Vec<bool> = (0..2).map(|_| t.step(&inputs).unwrap().cutmix).collect();
    assert_eq!(cutmix, [false, true], "{arch:?}: the alternation");
    let pairs: Vec<(&Tensor, &Tensor)> = t
        .teacher1
        .params()
        .values()
        .zip(t.student.params().values())
        .collect();
    for width in [4, 8] {
        ops::ema::ema_many_with(&pairs, 0.5, width).unwrap();
    }
}

/// Inference of both pipelines (the 3D sliding window with both weightings, the 2D
/// slice-wise one with probabilities).
fn inference(g: &Arc<Gpu>) {
    let vnet = Model::init(
        g,
        ModelConfig {
            arch: Arch::VNet,
            in_channels: 1,
            num_classes: 2,
        },
        8,
    )
    .unwrap();
    let shape = [20, 18, 17];
    let img = ssnet::reference::to_f32(&r::normal(2, numel(&shape)));
    for weighting in [Weighting::Uniform, Weighting::Gaussian] {
        let cfg = InferConfig {
            window: SlidingWindow {
                patch: [16, 16, 16],
                stride_xy: 8,
                stride_z: 8,
                weighting,
                batch: 0,
            },
            ..Default::default()
        };
        predict_volume(&vnet, &img, shape, &cfg, true).unwrap();
    }
    let unet = Model::init(
        g,
        ModelConfig {
            arch: Arch::UNet,
            in_channels: 1,
            num_classes: 4,
        },
        9,
    )
    .unwrap();
    let shape = [2, 20, 24];
    let img = ssnet::reference::to_f32(&r::normal(3, numel(&shape)));
    let cfg = InferConfig {
        slices: SliceWise {
            size: [16, 16],
            batch: 0,
        },
        ..Default::default()
    };
    predict_volume(&unet, &img, shape, &cfg, true).unwrap();
}

/// Every tuning candidate of the tiled kernels: a convolution (forward with bias, input and
/// weight gradients), a kernel-2 stride-2 one (its input gradient is the transposed GEMM) and
/// a transposed convolution, tuned on a device of their own.
fn tuning_candidates(g: &Arc<Gpu>) {
    let dir = tempfile::tempdir().unwrap();
    assert!(g.enable_tuning(Some(dir.path().join("tune.json"))));
    for (xs, ws, s, p) in [
        ([2, 5, 7, 6, 5], [20, 5, 3, 3, 3], 1, 1),
        ([1, 4, 6, 4, 8], [6, 4, 2, 2, 2], 2, 0),
    ] {
        let ys = r::conv3d_out_shape(&xs, &ws, s, p);
        let x = upload(g, &r::normal(4, numel(&xs)), &xs);
        let w = upload(g, &r::normal(5, numel(&ws)), &ws);
        let b = upload(g, &r::normal(6, ws[0]), &[ws[0]]);
        let gy = upload(g, &r::normal(7, numel(&ys)), &ys);
        ops::conv3d(&x, &w, Some(&b), s, p).unwrap();
        ops::conv3d_bwd_input(&gy, &w, &xs, s, p).unwrap();
        ops::conv3d_bwd_weight(&gy, &x, &ws, s, p).unwrap();
    }
    let (xs, ws) = ([1, 6, 3, 4, 2], [6, 5, 2, 2, 2]);
    let x = upload(g, &r::normal(8, numel(&xs)), &xs);
    let w = upload(g, &r::normal(9, numel(&ws)), &ws);
    let b = upload(g, &r::normal(10, 5), &[5]);
    ops::conv_transpose3d(&x, &w, Some(&b), 2)
        .unwrap()
        .to_f32()
        .unwrap();
    assert!(g.tune_runs() > 0, "nothing was tuned");
}

fn device(units: MatrixUnits, shape: MmaShape) -> Arc<Gpu> {
    Gpu::with_options(
        std::env::var("SSNET_DEVICE").ok().as_deref(),
        GpuOptions {
            matrix_units: units,
            mma_shape: Some(shape),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

#[test]
fn pipelines_created_match_the_committed_list() {
    let g = gpu();
    train_iteration(&g, Arch::VNet, &[16, 16, 16], 2);
    train_iteration(&g, Arch::UNet, &[16, 16], 4);
    admt_steps(&g, Arch::VNet, &[16, 16, 16], 2);
    admt_steps(&g, Arch::UNet, &[16, 16], 4);
    inference(&g);
    let f32_dev = device(MatrixUnits::Off, MmaShape::M16x16);
    tuning_candidates(&f32_dev);
    tuning_candidates(&device(MatrixUnits::Emulated, MmaShape::M16x16));
    tuning_candidates(&device(MatrixUnits::Emulated, MmaShape::M8x8));
    let got: BTreeSet<String> = created().iter().map(|s| s.to_string()).collect();
    let listed = std::fs::read_to_string(list_path()).map(|t| parse_list(&t).unwrap());
    // A listed tile this adapter cannot run (its workgroup memory over the adapter's limit:
    // lavapipe has 32 KiB, larger GPUs 48 KiB and more) is not created here; it stays listed.
    let fits_here = |s: &PipelineSpec| {
        let c: Vec<(&str, f64)> = s.constants.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        f32_dev.check_footprint(s.shader, &s.entry, &c).is_ok()
    };
    if std::env::var("SSNET_UPDATE_PIPELINES").as_deref() == Ok("1") {
        let mut lines = got.clone();
        if let Ok(old) = &listed {
            lines.extend(old.iter().filter(|s| !fits_here(s)).map(|s| s.to_string()));
        }
        let mut text = String::from(
            "# Every pipeline the engine creates (tests/pipelines.rs); regenerate with\n",
        );
        text.push_str(&format!("# {REGENERATE}\n"));
        for l in &lines {
            text.push_str(l);
            text.push('\n');
        }
        std::fs::write(list_path(), text).unwrap();
        return;
    }
    let listed = listed.unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with {REGENERATE}",
            list_path().display()
        )
    });
    // Under strict limits (SSNET_LIMITS=webgpu) more tiles are not allowed: only new
    // pipelines count there.
    let strict = std::env::var("SSNET_LIMITS").is_ok_and(|v| !v.is_empty());
    let want: BTreeSet<String> = listed.iter().map(|s| s.to_string()).collect();
    let expected: BTreeSet<String> = listed
        .iter()
        .filter(|s| !strict && fits_here(s))
        .map(|s| s.to_string())
        .collect();
    let extra: Vec<_> = got.difference(&want).collect();
    let missing: Vec<_> = expected.difference(&got).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "tests/pipelines.list is stale: created but not listed {extra:?}; listed but not created {missing:?}. Regenerate it with {REGENERATE}"
    );
}

// ------------------------------------------------------------------ translation (no GPU)

/// A module parsed and validated with every capability (the backends check their own).
fn parse(shader: Shader) -> (naga::Module, ModuleInfo) {
    let src = shader.source();
    let module = naga::front::wgsl::parse_str(&src)
        .unwrap_or_else(|e| panic!("{}: {}", shader.file(), e.emit_to_string(&src)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", shader.file(), e.emit_to_string(&src)));
    (module, info)
}

/// The modules on cooperative matrices.
fn is_coop(shader: Shader) -> bool {
    matches!(shader, Shader::ConvMma | Shader::ConvMma8)
}

/// Which backends a module goes to.
fn backends(shader: Shader) -> &'static [&'static str] {
    match shader {
        // wgpu 30 translates cooperative matrices for Vulkan and Metal only.
        Shader::ConvMma | Shader::ConvMma8 => &["spirv", "msl"],
        _ => &["spirv", "msl", "hlsl"],
    }
}

/// The matrix-unit twin of an emulated tensor-core entry: the same entry point and tile
/// constants on cooperative matrices (never created on an adapter without them).
fn coop_twin(s: &PipelineSpec) -> Option<PipelineSpec> {
    let shader = match s.shader {
        Shader::ConvMmaEmulated => Shader::ConvMma,
        Shader::ConvMma8Emulated => Shader::ConvMma8,
        _ => return None,
    };
    Some(PipelineSpec {
        shader,
        ..s.clone()
    })
}

/// `spirv-val` when installed (else `None`, a failure with `SSNET_REQUIRE_SPIRV_VAL=1`).
fn spirv_val() -> Option<PathBuf> {
    match std::process::Command::new("spirv-val")
        .arg("--version")
        .output()
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            eprintln!("spirv-val: {}", text.lines().next().unwrap_or("").trim());
            Some("spirv-val".into())
        }
        Err(_) => {
            assert!(
                std::env::var("SSNET_REQUIRE_SPIRV_VAL").as_deref() != Ok("1"),
                "SSNET_REQUIRE_SPIRV_VAL=1 but spirv-val is not on PATH (Debian: apt-get install spirv-tools)"
            );
            eprintln!(
                "note: spirv-val not found (Debian: spirv-tools): SPIR-V checked by naga only"
            );
            None
        }
    }
}

/// The capability SPIR-V tools older than 2023.4 (Debian 12 has 2023.1) do not know:
/// CooperativeMatrixKHR. Such a `spirv-val` is not new enough for the matrix-unit modules.
const UNKNOWN_COOP: &str = "Invalid capability operand: 6022";

/// Translates one pipeline for `backends`; the error names shader, entry and constants.
fn translate(
    spec: &PipelineSpec,
    parsed: &(naga::Module, ModuleInfo),
    val: Option<&PathBuf>,
    dir: &std::path::Path,
) -> Result<(), String> {
    let what = spec.to_string();
    let stage = naga::ShaderStage::Compute;
    let mut consts = naga::back::PipelineConstants::default();
    for (k, v) in &spec.constants {
        consts.insert(k.clone(), *v);
    }
    let (m, i) = process_overrides(&parsed.0, &parsed.1, Some((stage, &spec.entry)), &consts)
        .map_err(|e| format!("{what}: constants: {e:?}"))?;
    for &backend in backends(spec.shader) {
        match backend {
            "spirv" => {
                let opts = naga::back::spv::Options {
                    lang_version: (1, 3),
                    ..Default::default()
                };
                let pipe = naga::back::spv::PipelineOptions {
                    shader_stage: stage,
                    entry_point: spec.entry.clone(),
                };
                let words = naga::back::spv::write_vec(&m, &i, &opts, Some(&pipe))
                    .map_err(|e| format!("{what}: SPIR-V: {e:?}"))?;
                // The products of the matrix-unit modules really go through the matrix units:
                // OpCooperativeMatrixMulAddKHR (opcode 4459).
                if is_coop(spec.shader)
                    && spec.entry.ends_with("_mma")
                    && !words.iter().any(|w| w & 0xffff == 4459)
                {
                    return Err(format!(
                        "{what}: no OpCooperativeMatrixMulAddKHR in the SPIR-V"
                    ));
                }
                if let Some(exe) = val {
                    let f = dir.join("module.spv");
                    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                    std::fs::write(&f, bytes).map_err(|e| e.to_string())?;
                    let out = std::process::Command::new(exe)
                        .args(["--target-env", "vulkan1.1"])
                        .arg(&f)
                        .output()
                        .map_err(|e| format!("spirv-val: {e}"))?;
                    let err = String::from_utf8_lossy(&out.stderr);
                    let too_old = is_coop(spec.shader) && err.contains(UNKNOWN_COOP);
                    if !out.status.success() && !too_old {
                        return Err(format!(
                            "{what}: spirv-val: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        ));
                    }
                }
            }
            "msl" => {
                let opts = naga::back::msl::Options {
                    lang_version: (2, 4),
                    ..Default::default()
                };
                let pipe = naga::back::msl::PipelineOptions {
                    entry_point: Some((stage, spec.entry.clone())),
                    ..Default::default()
                };
                let (text, _) = naga::back::msl::write_string(&m, &i, &opts, &pipe)
                    .map_err(|e| format!("{what}: MSL: {e:?}"))?;
                if !text.contains(&spec.entry) {
                    return Err(format!("{what}: MSL lacks the entry point"));
                }
                // Metal's simdgroup matrices of the tile's side.
                let side = if spec.shader == Shader::ConvMma8 {
                    8
                } else {
                    16
                };
                let simd = format!("simdgroup_float{side}x{side}");
                if is_coop(spec.shader) && spec.entry.ends_with("_mma") && !text.contains(&simd) {
                    return Err(format!("{what}: no {simd} in the MSL"));
                }
            }
            "hlsl" => {
                let opts = naga::back::hlsl::Options {
                    shader_model: naga::back::hlsl::ShaderModel::V6_2,
                    ..Default::default()
                };
                let pipe = naga::back::hlsl::PipelineOptions {
                    entry_point: Some((stage, spec.entry.clone())),
                };
                let mut text = String::new();
                naga::back::hlsl::Writer::new(&mut text, &opts, &pipe)
                    .write(&m, &i, None)
                    .map_err(|e| format!("{what}: HLSL: {e:?}"))?;
                if !text.contains(&spec.entry) {
                    return Err(format!("{what}: HLSL lacks the entry point"));
                }
            }
            _ => unreachable!(),
        }
    }
    Ok(())
}

#[test]
fn every_listed_pipeline_translates_for_vulkan_metal_and_dx12() {
    let text = std::fs::read_to_string(list_path()).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with {REGENERATE}",
            list_path().display()
        )
    });
    let listed = parse_list(&text).unwrap();
    assert!(!listed.is_empty(), "tests/pipelines.list is empty");
    let parsed: HashMap<Shader, (naga::Module, ModuleInfo)> =
        Shader::ALL.iter().map(|&s| (s, parse(s))).collect();
    let mut specs: Vec<PipelineSpec> = listed.clone();
    specs.extend(listed.iter().filter_map(coop_twin));
    // Every entry point of every module with its default constants, too (entry points the
    // tiny runs do not reach, such as the strided input gradient, must translate as well).
    for &s in Shader::ALL {
        for e in &parsed[&s].0.entry_points {
            specs.push(PipelineSpec::new(s, &e.name, &[]));
        }
    }
    let val = spirv_val();
    let dir = tempfile::tempdir().unwrap();
    let failures: Vec<String> = specs
        .iter()
        .filter_map(|s| translate(s, &parsed[&s.shader], val.as_ref(), dir.path()).err())
        .collect();
    eprintln!(
        "{} pipelines translated ({} listed, {} cooperative-matrix twins, the rest entry points with default constants)",
        specs.len(),
        listed.len(),
        listed.iter().filter_map(coop_twin).count()
    );
    assert!(
        failures.is_empty(),
        "{} of {} pipelines fail to translate:\n{}",
        failures.len(),
        specs.len(),
        failures.join("\n")
    );
}
