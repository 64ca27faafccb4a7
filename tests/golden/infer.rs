// Golden tests of sliding-window inference (SS-Net's test_single_case with the vnet_init
// weights). Included by tests/golden.rs.

/// The reference broadcasts the averaged foreground probability into every channel of its
/// `score_map` (`score_map[:, ...] += y[0, 1]`): both stored channels hold p1, which is our
/// channel 1. Labels are p1 > 0.5 and must match exactly; a voxel whose reference p1 is within
/// max(1e-5, K × the reference's own float32 error on that voxel's p1) of 0.5 may flip
/// (printed), none other.
fn eval_sliding_window(stem: &str) {
    use ssnet::infer::{sliding_window, SlidingWindow, Weighting};
    use ssnet::nn::Model;
    let fx = Fixture::load("eval", stem).unwrap();
    let (image, dims) = fx.f32("image").unwrap();
    let (score, sdims) = fx.f32("score_map").unwrap();
    let (label, ldims) = fx.u8("label_map").unwrap();
    let shape: [usize; 3] = dims.clone().try_into().unwrap();
    assert_eq!(ldims, dims);
    let classes = fx.cfg_f64("num_classes").unwrap() as usize;
    assert_eq!(sdims, [vec![classes], dims.clone()].concat());
    let patch: Vec<usize> = fx.config["patch"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let cfg = SlidingWindow {
        patch: patch.try_into().unwrap(),
        stride_xy: fx.cfg_f64("stride_xy").unwrap() as usize,
        stride_z: fx.cfg_f64("stride_z").unwrap() as usize,
        weighting: Weighting::Uniform,
        batch: 0,
    };
    let gpu = ssnet::gpu::Gpu::shared().expect("GPU tests need an adapter");
    let init = ssnet::golden::golden_dir().join("models/vnet_init.safetensors");
    let model = Model::load(&gpu, &init).unwrap();
    let plan = cfg.plan(shape).unwrap();
    println!("{stem}: image {shape:?}, padded {:?}, {} patches", plan.padded, plan.num_patches());
    let pred = sliding_window(&model, &image, shape, &cfg).unwrap();
    let n = image.len();
    let p1 = pred.class_probs(1).unwrap();
    let p0 = pred.class_probs(0).unwrap();
    let sum_err = p0.iter().zip(p1).map(|(a, b)| (a + b - 1.0).abs()).fold(0f32, f32::max);
    println!("{:<48} max |p0 + p1 - 1| {sum_err:.3e}", "probabilities");
    let mut p = ssnet::golden::Parity::new(&fx);
    let score32 = p.reference_f32("score_map").unwrap();
    p.tensor_vs("score_map", "score_map[0] (p1)", p1, &score[..n], &score32[..n], tol::OP);
    p.tensor_vs("score_map", "score_map[1] (p1)", p1, &score[n..], &score32[n..], tol::OP);
    let label32: Vec<u8> = fx.u8("f32.label_map").map(|t| t.0).unwrap_or_else(|_| label.clone());
    let ref_flips = label32.iter().zip(&label).filter(|(a, b)| a != b).count();
    let mut flips = 0;
    let mut bad = 0;
    for i in 0..n {
        if pred.labels[i] != label[i] {
            flips += 1;
            let margin = 1e-5f32.max(ssnet::golden::K as f32 * (score32[n + i] - score[n + i]).abs());
            let near = (score[n + i] - 0.5).abs() <= margin;
            println!("  label differs at {i}: ours {} ref {} (ref p1 {}, ours {}, margin {margin:.2e}){}", pred.labels[i], label[i], score[n + i], p1[i], if near { " near 0.5: allowed" } else { "" });
            if !near {
                bad += 1;
            }
        }
    }
    println!("{:<48} {flips} of {n} voxels differ ({} foreground in the reference; its float32 run: {ref_flips} differ)", "label_map", label.iter().filter(|&&l| l == 1).count());
    p.exact(if bad == 0 { Ok(()) } else { Err(format!("label_map: {bad} voxels differ away from p1 = 0.5")) });
    p.finish();
}

#[test]
fn eval__sliding_window_0() {
    eval_sliding_window("sliding_window_0");
}

#[test]
fn eval__sliding_window_1() {
    eval_sliding_window("sliding_window_1");
}
