//! Convolution tile autotuning, for correctness only (speed is never asserted, and nothing is
//! tuned for speed on a software adapter): with tuning forced on, conv3d and
//! conv_transpose3d forward + backward on odd shapes match their f64 twins at the tolerances
//! of tests/conv.rs; each (kernel, shape) key is tuned once and cached on the device; the
//! cache file round-trips (a fresh device loads it and tunes nothing, with bit-identical
//! results), a choice read from the file is the one used, and a corrupt file is ignored.
//! Each test opens devices of its own (the choices live in the device).

mod common;
use common::*;
use ssnet::autograd::backward_with;
use ssnet::gpu::tune::TileChoice;
use ssnet::gpu::Gpu;
use ssnet::ops;
use ssnet::reference as r;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Weight gradients sum over N·voxels products: tests/conv.rs's looser written bound.
const TOL_GW: f64 = 2e-5;

/// conv3d with odd channels and spatial sizes; Co and Ci > 4 so that the forward and the
/// input gradient both take the tiled `conv_gemm` (not the narrow kernel).
const XS: [usize; 5] = [2, 6, 5, 6, 7];
const WS: [usize; 5] = [5, 6, 3, 3, 3];

/// A device with tuning on, caching in `file`. Tuning needs GPU timestamps: lavapipe has
/// them, an adapter without them fails this test rather than skipping it.
fn tuned_gpu(file: &Path) -> Arc<Gpu> {
    let g = new_gpu();
    assert!(
        g.has_timestamps(),
        "{}: tuning tests need TIMESTAMP_QUERY",
        g.describe()
    );
    assert!(g.enable_tuning(Some(file.to_path_buf())));
    assert!(g.tuning_enabled());
    g
}

/// conv3d forward + backward (through the tape) on `g`: y, gx, gw, gb, each checked
/// against the twins.
fn conv3d_case(g: &Arc<Gpu>) -> [Vec<f64>; 4] {
    let (s, p) = (1, 1);
    let x = r::normal(11, XS.iter().product());
    let w: Vec<f64> = r::normal(12, WS.iter().product())
        .iter()
        .map(|v| v * 0.3)
        .collect();
    let b = r::normal(13, WS[0]);
    let ys = r::conv3d_out_shape(&XS, &WS, s, p);
    let yr = r::conv3d(&x, &XS, &w, &WS, Some(&b), s, p);
    let dy = r::normal(14, yr.len());
    let xt = upload(g, &x, &XS).with_grad();
    let wt = upload(g, &w, &WS).with_grad();
    let bt = upload(g, &b, &[WS[0]]).with_grad();
    let dyt = upload(g, &dy, &ys);
    let y = ops::conv3d(&xt, &wt, Some(&bt), s, p).unwrap();
    let gr = backward_with(&y, &dyt).unwrap();
    let out = [
        down(&y),
        down(gr.get(&xt).unwrap()),
        down(gr.get(&wt).unwrap()),
        down(gr.get(&bt).unwrap()),
    ];
    assert_close("tuned conv3d fwd", &out[0], &yr, TOL_FWD);
    let gxr = r::conv3d_bwd_input(&dy, &w, &WS, &XS, s, p);
    assert_close("tuned conv3d gx", &out[1], &gxr, TOL_BWD);
    let gwr = r::conv3d_bwd_weight(&dy, &x, &XS, &WS, s, p);
    assert_close("tuned conv3d gw", &out[2], &gwr, TOL_GW);
    assert_close(
        "tuned conv3d gb",
        &out[3],
        &r::conv3d_bwd_bias(&dy, &ys),
        TOL_BWD,
    );
    out
}

fn file_section(file: &Path, g: &Gpu) -> BTreeMap<String, TileChoice> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    serde_json::from_value(v["adapters"][g.tune_adapter_key()].clone()).unwrap()
}

#[test]
fn tuned_conv3d_matches_twin_tunes_each_key_once_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub").join("tune.json");
    let g = tuned_gpu(&file);
    assert_eq!(g.tune_file().as_deref(), Some(file.as_path()));
    assert!(g.tuned_choices().is_empty());

    // First call: forward (conv_gemm), input gradient (conv_gemm, flipped kernel) and weight
    // gradient (conv_wgrad) each tuned once.
    let first = conv3d_case(&g);
    let choices = g.tuned_choices();
    for (k, c) in &choices {
        println!("{k}: {c:?}");
    }
    assert_eq!(choices.len(), 3, "{choices:?}");
    let count = |pre: &str, has: &str| {
        choices
            .keys()
            .filter(|k| k.starts_with(pre) && k.contains(has))
            .count()
    };
    assert_eq!(count("conv_gemm ", "flip0"), 1, "{choices:?}");
    assert_eq!(count("conv_gemm ", "flip1"), 1, "{choices:?}");
    assert_eq!(count("conv_wgrad ", ""), 1, "{choices:?}");
    assert_eq!(g.tune_runs(), 3);

    // Second call: nothing re-tuned, the same plans, the same bits.
    let second = conv3d_case(&g);
    assert_eq!(g.tune_runs(), 3, "a second call re-tuned");
    assert_eq!(first, second, "tuned results are not deterministic");

    // The file holds this adapter's choices; a fresh device loads them and tunes nothing.
    assert_eq!(file_section(&file, &g), choices);
    let g2 = tuned_gpu(&file);
    assert_eq!(g2.tuned_choices(), choices);
    let third = conv3d_case(&g2);
    assert_eq!(
        g2.tune_runs(),
        0,
        "choices loaded from the file were re-tuned"
    );
    assert_eq!(first, third, "the loaded choices gave other results");

    // A choice in the file is the one used: split-K forward / input gradient with 32×128 tiles,
    // a two-chunk weight gradient with 16×16 tiles in 16 groups (valid candidates of these
    // shapes), still matching the twins, and not re-tuned.
    let mut forced = choices.clone();
    for (k, c) in forced.iter_mut() {
        *c = if k.starts_with("conv_wgrad") {
            TileChoice {
                bm: 16,
                bn: 16,
                bk: 4,
                g: 16,
                splits: 2,
            }
        } else {
            TileChoice {
                bm: 32,
                bn: 128,
                bk: 16,
                g: 1,
                splits: 2,
            }
        };
    }
    let mut whole: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    whole["adapters"][g.tune_adapter_key()] = serde_json::to_value(&forced).unwrap();
    let forced_file = dir.path().join("forced.json");
    std::fs::write(&forced_file, serde_json::to_string(&whole).unwrap()).unwrap();
    let g3 = tuned_gpu(&forced_file);
    assert_eq!(g3.tuned_choices(), forced);
    conv3d_case(&g3);
    assert_eq!(g3.tune_runs(), 0, "the forced choices were not used");

    // A corrupt file: ignored (a warning), then replaced by a valid one at the next choice.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ this is not json").unwrap();
    let g4 = tuned_gpu(&bad);
    assert!(g4.tuned_choices().is_empty());
    let x = upload(&g4, &r::normal(1, XS.iter().product()), &XS);
    let w = upload(&g4, &r::normal(2, WS.iter().product()), &WS);
    ops::conv3d(&x, &w, None, 1, 1).unwrap().to_f32().unwrap();
    assert_eq!(g4.tune_runs(), 1);
    assert_eq!(file_section(&bad, &g4).len(), 1);
}

#[test]
fn tuned_conv_transpose3d_matches_twin() {
    // ct_gemm forward; its input gradient is a kernel == stride conv (conv_gemm), its weight
    // gradient a conv_wgrad: three keys, each tuned once.
    let dir = tempfile::tempdir().unwrap();
    let g = tuned_gpu(&dir.path().join("tune.json"));
    let (xs, ws, s) = ([1usize, 6, 3, 4, 3], [6usize, 5, 2, 2, 2], 2);
    let x = r::normal(21, xs.iter().product());
    let w: Vec<f64> = r::normal(22, ws.iter().product())
        .iter()
        .map(|v| v * 0.3)
        .collect();
    let b = r::normal(23, ws[1]);
    let ys = r::conv_transpose3d_out_shape(&xs, &ws, s);
    let yr = r::conv_transpose3d(&x, &xs, &w, &ws, Some(&b), s);
    let dy = r::normal(24, yr.len());
    let run = || {
        let xt = upload(&g, &x, &xs).with_grad();
        let wt = upload(&g, &w, &ws).with_grad();
        let bt = upload(&g, &b, &[ws[1]]).with_grad();
        let y = ops::conv_transpose3d(&xt, &wt, Some(&bt), s).unwrap();
        let gr = backward_with(&y, &upload(&g, &dy, &ys)).unwrap();
        [
            down(&y),
            down(gr.get(&xt).unwrap()),
            down(gr.get(&wt).unwrap()),
        ]
    };
    let first = run();
    assert_close("tuned conv_transpose3d fwd", &first[0], &yr, TOL_FWD);
    let gxr = r::conv_transpose3d_bwd_input(&dy, &w, &ws, &xs, s);
    assert_close("tuned conv_transpose3d gx", &first[1], &gxr, TOL_BWD);
    let gwr = r::conv_transpose3d_bwd_weight(&dy, &x, &xs, &ws, s);
    assert_close("tuned conv_transpose3d gw", &first[2], &gwr, TOL_GW);
    let choices = g.tuned_choices();
    for (k, c) in &choices {
        println!("{k}: {c:?}");
    }
    assert_eq!(choices.len(), 3, "{choices:?}");
    assert_eq!(
        choices.keys().filter(|k| k.starts_with("ct_gemm ")).count(),
        1
    );
    assert_eq!(g.tune_runs(), 3);
    assert_eq!(run(), first, "tuned results are not deterministic");
    assert_eq!(g.tune_runs(), 3, "a second call re-tuned");
}
