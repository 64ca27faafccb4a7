// Dropout (element-wise, and whole channels as Dropout2d / Dropout3d), forward and backward.
//
// Binding contract: @binding(0) params (uniform DoParams), then x (read) and y (read_write).
// Grid: 1-D over `total` elements, folded into 2-D; linear index
// (wid.y * nwg.x + wid.x) * 256 + lid.x, bound-checked.
//
// Random numbers: a counter-based hash, no state. The unit index u (the element's flat index
// for element dropout, n * C + c = i / S for channel dropout of [N, C, S]) is hashed with the
// two 32-bit keys k0, k1 derived from the 64-bit seed on the CPU (src/ops/dropout.rs,
// `dropout_keys`): h = mix(mix(u ^ k0) + k1), mix = "lowbias32" (xorshift-multiply, a
// bijection with full avalanche). The unit is kept when its top 24 bits (h >> 8) are
// >= thr = ceil(p * 2^24), so the drop probability is thr / 2^24 (p within 6e-8); kept
// values are multiplied by `scale` = 1 / (1 - p). The backward applies the same mask and
// scale to the gradient (the same kernel on g): the mask is regenerated, never stored.
// Pieces: over the storage-binding limit the launch is split into ranges (src/ops/mod.rs,
// launch_pieces); `total` is then the piece's length and `base` its first global index.
// `src/ops/dropout.rs` has the same hash in Rust; the CPU twin reproduces the mask exactly.

struct DoParams {
    total: u32,
    s: u32,
    thr: u32,
    k0: u32,
    k1: u32,
    base: u32,
    scale: f32,
    _pad1: f32,
}

@group(0) @binding(0) var<uniform> p: DoParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn mix32(v: u32) -> u32 {
    var h = v;
    h = h ^ (h >> 16u);
    h = h * 0x7feb352du;
    h = h ^ (h >> 15u);
    h = h * 0x846ca68bu;
    h = h ^ (h >> 16u);
    return h;
}

@compute @workgroup_size(256)
fn dropout_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.total) { return; }
    let u = (p.base + i) / p.s;
    let h = mix32(mix32(u ^ p.k0) + p.k1);
    let keep = (h >> 8u) >= p.thr;
    y[i] = select(0.0, x[i] * p.scale, keep);
}
