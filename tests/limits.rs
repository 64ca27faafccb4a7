//! The strict-limits mode (`SSNET_LIMITS=webgpu`, `--limits webgpu`): the device is opened
//! with wgpu's default limits, tile choices stay within them, and what cannot fit is refused
//! with the limit named. The kernel tests and golden fixtures also run whole in this mode in
//! CI (.ci/run).

mod common;
use common::*;
use ssnet::gpu::footprint::footprint;
use ssnet::gpu::registry::parse_list;
use ssnet::gpu::{Gpu, GpuOptions, LimitsMode, MatrixUnits, Shader};
use ssnet::ops;
use ssnet::reference as r;
use ssnet::tensor::{DType, Tensor};
use std::sync::Arc;

fn strict(units: MatrixUnits) -> Arc<Gpu> {
    Gpu::with_options(
        std::env::var("SSNET_DEVICE").ok().as_deref(),
        GpuOptions {
            matrix_units: units,
            limits: LimitsMode::WebGpu,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

#[test]
fn limits_option_parses_and_rejects_junk() {
    assert_eq!(LimitsMode::parse("webgpu").unwrap(), LimitsMode::WebGpu);
    assert_eq!(LimitsMode::parse("").unwrap(), LimitsMode::Adapter);
    let e = LimitsMode::parse("tiny").unwrap_err().to_string();
    assert!(e.contains("'tiny'") && e.contains("adapter, webgpu"), "{e}");
}

#[test]
fn webgpu_mode_opens_the_device_with_wgpus_default_limits() {
    let g = strict(MatrixUnits::Off);
    let d = wgpu::Limits::default();
    assert_eq!(g.limits_mode(), LimitsMode::WebGpu);
    assert_eq!(g.limits.max_compute_workgroup_storage_size, 16384);
    assert_eq!(g.limits.max_storage_buffer_binding_size, 128 << 20);
    assert_eq!(
        g.limits.max_storage_buffers_per_shader_stage,
        d.max_storage_buffers_per_shader_stage
    );
    assert_eq!(
        g.limits.max_compute_workgroups_per_dimension,
        d.max_compute_workgroups_per_dimension
    );
}

/// A tensor over the 128 MiB binding limit exists (up to `max_buffer_size`, 256 MiB here);
/// an op that cannot work in pieces refuses it naming the binding limit, and a tensor over
/// the buffer limit is refused naming that one. (tests/split.rs checks the ops that split.)
#[test]
fn a_tensor_over_the_binding_limit_is_refused_by_ops_that_cannot_split_naming_the_limit() {
    let g = strict(MatrixUnits::Off);
    let x = Tensor::empty(&g, &[(129usize << 20) / 4], DType::F32, "big op").unwrap();
    let e = ops::sum_all(&x).unwrap_err().to_string();
    assert!(
        e.contains("max_storage_buffer_binding_size")
            && e.contains("does not work in pieces")
            && e.contains("SSNET_LIMITS=webgpu")
            && !e.contains('\n'),
        "{e}"
    );
    let n = (257usize << 20) / 4;
    let e = match Tensor::empty(&g, &[n], DType::F32, "big op") {
        Ok(_) => panic!("257 MiB must be refused under WebGPU limits"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.starts_with("big op:")
            && e.contains("max_buffer_size")
            && e.contains("SSNET_LIMITS=webgpu")
            && !e.contains('\n'),
        "{e}"
    );
}

/// The f32 kernels fit WebGPU's limits at every tile; the matrix-unit tiles need more
/// workgroup memory than 16 KiB (their f16 staging plus one 16×16 f32 accumulator per
/// subgroup), so that path is off there. The grouped EMA's 8- and 16-pair entry points need
/// 16 and 32 storage buffers: they are picked only where the adapter offers them, and under
/// WebGPU's 8 the 4-pair one is.
#[test]
fn every_listed_f32_pipeline_fits_webgpu_limits() {
    let d = wgpu::Limits::default();
    let ema_width = ops::ema::ema_slots(&strict(MatrixUnits::Off));
    assert_eq!(ema_width, 4);
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pipelines.list"))
            .unwrap();
    let mut biggest = (0, String::new());
    for s in parse_list(&text).unwrap() {
        let c: Vec<(&str, f64)> = s.constants.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let f = footprint(s.shader, &s.entry, &c).unwrap();
        assert!(
            f.invocations <= d.max_compute_invocations_per_workgroup,
            "{s}: {f:?}"
        );
        let ema_picked_by_limit =
            s.shader == Shader::Ema && f.storage_buffers as usize > 2 * ema_width;
        assert!(
            f.storage_buffers <= d.max_storage_buffers_per_shader_stage || ema_picked_by_limit,
            "{s}: {f:?}"
        );
        if matches!(s.shader, Shader::ConvMmaEmulated | Shader::ConvMma8Emulated) {
            continue;
        }
        assert!(
            f.workgroup_bytes <= d.max_compute_workgroup_storage_size,
            "{s}: {f:?}"
        );
        if f.workgroup_bytes > biggest.0 {
            biggest = (f.workgroup_bytes, s.to_string());
        }
    }
    eprintln!(
        "most workgroup memory of an f32 pipeline: {} bytes ({})",
        biggest.0, biggest.1
    );
}

/// Under WebGPU limits a convolution runs on tiles that fit and matches its twin; asking for
/// the (emulated) tensor cores falls back to the f32 path (the first-use check names the
/// limit) with the f32 path's bits.
#[test]
fn convolutions_under_webgpu_limits_match_the_twins() {
    let g = strict(MatrixUnits::Off);
    let (xs, ws) = ([2usize, 5, 7, 6, 5], [20usize, 5, 3, 3, 3]);
    let x = r::normal(1, xs.iter().product());
    let w = r::normal(2, ws.iter().product());
    let ys = r::conv3d_out_shape(&xs, &ws, 1, 1);
    let dy = r::normal(3, ys.iter().product());
    let run = |g: &Arc<Gpu>| {
        let (xt, wt, dyt) = (upload(g, &x, &xs), upload(g, &w, &ws), upload(g, &dy, &ys));
        (
            down(&ops::conv3d(&xt, &wt, None, 1, 1).unwrap()),
            down(&ops::conv3d_bwd_input(&dyt, &wt, &xs, 1, 1).unwrap()),
            down(&ops::conv3d_bwd_weight(&dyt, &xt, &ws, 1, 1).unwrap()),
        )
    };
    let (y, gx, gw) = run(&g);
    assert_close("fwd", &y, &r::conv3d(&x, &xs, &w, &ws, None, 1, 1), TOL_FWD);
    assert_close(
        "gx",
        &gx,
        &r::conv3d_bwd_input(&dy, &w, &ws, &xs, 1, 1),
        TOL_BWD,
    );
    assert_close(
        "gw",
        &gw,
        &r::conv3d_bwd_weight(&dy, &x, &xs, &ws, 1, 1),
        TOL_BWD,
    );
    let tc = strict(MatrixUnits::Emulated);
    let bits = |v: &[f64]| v.iter().map(|x| (*x as f32).to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&run(&tc).0), bits(&y));
    assert_eq!(tc.matrix_units(), MatrixUnits::Off);
}

/// The tensor-core kernels refuse to be created where they need more workgroup memory than
/// the device has, naming the limit (wgpu 30 itself does not check it).
#[test]
fn a_pipeline_over_the_workgroup_memory_limit_is_refused_naming_it() {
    let g = strict(MatrixUnits::Off);
    let consts = [("SGM", 8.0), ("SGN", 1.0), ("TM", 2.0), ("TN", 1.0)];
    let e = g
        .check_footprint(Shader::ConvMmaEmulated, "conv_mma", &consts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("max_compute_workgroup_storage_size") && e.contains("conv_mma"),
        "{e}"
    );
    let f = footprint(Shader::ConvMmaEmulated, "conv_mma", &consts).unwrap();
    assert!(f.workgroup_bytes > 16384, "{f:?}");
}

/// The full training configurations need tensors over WebGPU's 128 MiB binding (what
/// `ssnet devices` reports as their needs) in ops that cannot work in pieces: the first
/// such op is refused naming the limit. LA: VNet's 16-channel activations of 4 × 112×112×80
/// (245 MiB); ACDC: UNet's top decoder concatenation, 32 channels of 24 × 256×256 (192 MiB).
#[test]
fn full_size_training_batches_are_refused_under_webgpu_limits_naming_the_limit() {
    use ssnet::nn::{Arch, Model, ModelConfig, Pass};
    let g = strict(MatrixUnits::Off);
    for (arch, shape) in [
        (Arch::VNet, vec![4usize, 1, 112, 112, 80]),
        (Arch::UNet, vec![24, 1, 256, 256]),
    ] {
        let cfg = ModelConfig {
            arch,
            in_channels: 1,
            num_classes: 2,
        };
        let model = Model::init(&g, cfg, 1).unwrap();
        let x = Tensor::from_f32(&g, &vec![0.0; shape.iter().product()], &shape).unwrap();
        let e = ssnet::autograd::no_grad(|| model.forward(&x, Pass::EVAL))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("max_storage_buffer_binding_size") && e.contains("SSNET_LIMITS=webgpu"),
            "{arch:?} {shape:?}: {e}"
        );
    }
}
