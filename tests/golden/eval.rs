// Golden tests of the evaluation side (metrics, resizing, sliding window).
// Included by tests/golden.rs.

/// medpy's dc / jc / hd95 / asd with the fixture's voxel spacing, skimage's largest
/// 26-connected component (exact mask), and dc / hd95 of that component against gt.
fn eval_metrics(stem: &str) {
    use ssnet::metrics::{evaluate, foreground, largest_component, CONN_26};
    let fx = Fixture::load("eval", stem).unwrap();
    let (gt, dims) = fx.u8("gt").unwrap();
    let (pred, pdims) = fx.u8("pred").unwrap();
    let (lcc_want, ldims) = fx.u8("largest_cc").unwrap();
    assert_eq!(dims, pdims);
    assert_eq!(dims, ldims);
    let spacing: Vec<f64> = fx.config["spacing"]
        .as_array()
        .expect("config.spacing")
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let (p, g) = (foreground(&pred), foreground(&gt));
    let m = evaluate(&p, &g, &dims, Some(&spacing)).unwrap();
    let lcc = largest_component(&p, &dims, CONN_26).unwrap();
    let ml = evaluate(&lcc, &g, &dims, Some(&spacing)).unwrap();
    let lcc_u8: Vec<u8> = lcc.iter().map(|&b| b as u8).collect();
    let want_lcc: Vec<u8> = lcc_want.iter().map(|&v| (v != 0) as u8).collect();
    let lcc_diff = lcc_u8.iter().zip(&want_lcc).filter(|(a, b)| a != b).count();
    println!(
        "{:<48} {} voxels differ of {} ({} kept)",
        "largest_cc",
        lcc_diff,
        lcc_u8.len(),
        want_lcc.iter().filter(|&&v| v == 1).count()
    );
    // Metrics are computed in float64 on both sides: the reference's float32 value is its
    // float64 value, and the README's tolerance decides.
    let mut p = ssnet::golden::Parity::new(&fx);
    for (name, got) in [
        ("dice", m.dice),
        ("jaccard", m.jaccard),
        ("hd95", m.hd95),
        ("asd", m.asd),
        ("hd95_lcc", ml.hd95),
        ("dice_lcc", ml.dice),
    ] {
        let want = fx.cfg_f64(name).unwrap();
        p.scalar_vs(name, name, got, want, want, tol::METRIC);
    }
    p.exact(if lcc_diff == 0 {
        Ok(())
    } else {
        Err(format!("largest_cc: {lcc_diff} voxels differ"))
    });
    p.finish();
}

#[test]
fn eval__metrics_0() {
    eval_metrics("metrics_0");
}

#[test]
fn eval__metrics_1() {
    eval_metrics("metrics_1");
}

#[test]
fn eval__metrics_2() {
    eval_metrics("metrics_2");
}

/// scipy `zoom(order=0)` to 256×256 and back, exactly, for the f32 image and the u8 label.
fn eval_zoom(stem: &str) {
    use ssnet::metrics::zoom_nearest;
    let fx = Fixture::load("eval", stem).unwrap();
    let (image, idims) = fx.f32("image").unwrap();
    let (image_256, i256) = fx.f32("image_256").unwrap();
    let (label, ldims) = fx.u8("label").unwrap();
    let (label_256, l256) = fx.u8("label_256").unwrap();
    let (label_back, lback) = fx.u8("label_back").unwrap();
    assert_eq!(i256, vec![256, 256]);
    assert_eq!(l256, vec![256, 256]);
    assert_eq!(idims, ldims);
    assert_eq!(lback, ldims);
    let exact = |what: &str, got_bits: Vec<u32>, want_bits: Vec<u32>| -> Result<(), String> {
        let diff = got_bits
            .iter()
            .zip(&want_bits)
            .filter(|(a, b)| a != b)
            .count();
        println!(
            "{what:<48} {diff} of {} elements differ (exact)",
            want_bits.len()
        );
        if got_bits.len() == want_bits.len() && diff == 0 {
            Ok(())
        } else {
            Err(format!("{what}: {diff} elements differ"))
        }
    };
    let img = zoom_nearest(&image, &idims, &[256, 256]).unwrap();
    let lab = zoom_nearest(&label, &ldims, &[256, 256]).unwrap();
    let back = zoom_nearest(&label_256, &[256, 256], &ldims).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let u = |v: &[u8]| v.iter().map(|&x| x as u32).collect::<Vec<u32>>();
    let mut p = ssnet::golden::Parity::new(&fx);
    p.exact(exact("image_256", bits(&img), bits(&image_256)));
    p.exact(exact("label_256", u(&lab), u(&label_256)));
    p.exact(exact("label_back", u(&back), u(&label_back)));
    p.finish();
}

#[test]
fn eval__zoom_nearest_0() {
    eval_zoom("zoom_nearest_0");
}

#[test]
fn eval__zoom_nearest_1() {
    eval_zoom("zoom_nearest_1");
}
