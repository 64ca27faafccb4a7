//! Shared test helpers: the GPU (a failure, never a skip, when there is none), seeded random
//! data, and comparisons with a written tolerance that print their errors.
#![allow(dead_code)]

use ssnet::gpu::Gpu;
use ssnet::tensor::Tensor;
use std::sync::Arc;

/// The test GPU. No adapter is a test failure with the way to get one.
pub fn gpu() -> Arc<Gpu> {
    match Gpu::shared() {
        Ok(g) => g,
        Err(e) => panic!("GPU tests need an adapter: {e}"),
    }
}

/// A GPU of its own (device state such as tuning choices not shared with other tests). No
/// adapter is a test failure.
pub fn new_gpu() -> Arc<Gpu> {
    let sel = std::env::var("SSNET_DEVICE").ok();
    match Gpu::new(sel.as_deref()) {
        Ok(g) => g,
        Err(e) => panic!("GPU tests need an adapter: {e}"),
    }
}

pub fn upload(g: &Arc<Gpu>, v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_f32(g, &ssnet::reference::to_f32(v), shape).unwrap()
}

pub fn down(t: &Tensor) -> Vec<f64> {
    ssnet::reference::to_f64(&t.to_f32().unwrap())
}

/// Relative L2 error of `got` against `want`, must be within `tol`; prints the errors.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let g: Vec<f32> = got.iter().map(|&x| x as f32).collect();
    let w: Vec<f32> = want.iter().map(|&x| x as f32).collect();
    if let Err(e) = ssnet::golden::check_rel_l2(what, &g, &w, tol) {
        panic!("{e}");
    }
}

/// Forward and backward tolerance for f32 kernels against the f64 twins (relative L2).
pub const TOL_FWD: f64 = 1e-6;
pub const TOL_BWD: f64 = 1e-5;
/// Finite differences on the f64 twins.
pub const TOL_FD: f64 = 1e-5;

/// A copy of a real LA `mri_norm2.h5` whose `image` and `label` datasets are cut down to
/// `dims` (their dataspace extents patched; the chunked data stays, the reader takes the
/// corner `[0..dims]`).
pub fn shrink_la_h5(src: &std::path::Path, dst: &std::path::Path, dims: [u64; 3]) {
    let mut b = std::fs::read(src).unwrap();
    let q = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let (mut found, mut i) = (0, 0);
    while i + 64 < b.len() {
        // A version-1 object header message: type 1 (dataspace), 56 bytes, version 1, rank 3,
        // dims then max dims (8 bytes each).
        if b[i..i + 4] == [1, 0, 56, 0]
            && b[i + 8] == 1
            && b[i + 9] == 3
            && (0..3).all(|k| q(&b, i + 16 + 8 * k) == q(&b, i + 40 + 8 * k))
        {
            for k in 0..6 {
                b[i + 16 + 8 * k..i + 24 + 8 * k].copy_from_slice(&dims[k % 3].to_le_bytes());
            }
            found += 1;
            i += 56;
        } else {
            i += 1;
        }
    }
    assert_eq!(found, 2, "image and label dataspaces");
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::write(dst, b).unwrap();
}

/// The lines of a JSONL log without their timings (`time_s`, `step_s`), for comparing runs.
#[allow(dead_code)]
pub fn jsonl_without_times(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("time_s");
            o.remove("step_s");
            v
        })
        .collect()
}
