// Element-wise ops and their backwards.
//
// Binding contract (every entry point): @binding(0) params (uniform EwParams), then the
// storage buffers in the order the Rust side passes them (see src/ops/elementwise.rs).
// Grid: 1-D over `n` elements, folded into 2-D when large; the linear index is
// (wid.y * nwg.x + wid.x) * 256 + lid.x and every invocation bound-checks it.
// Channel broadcast (bias): x is [outer, c, inner] row-major, b is [c]:
//   channel of element i = (i / inner) % c.
// Pieces: a launch over a tensor larger than the storage-binding limit is split into pieces
// bound as buffer ranges (src/ops/mod.rs, launch_pieces); `n` is then the piece's length and
// `base` the global index of its element 0. Only kernels that read their global index (the
// bias channel, the noise hash) add `base`; the others never see it.

struct EwParams {
    n: u32,
    c: u32,
    inner: u32,
    base: u32,
    alpha: f32,
    beta: f32,
    _pad2: f32,
    _pad3: f32,
}

@group(0) @binding(0) var<uniform> p: EwParams;

fn gid(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// ---- fill: out = alpha
@group(0) @binding(1) var<storage, read_write> fill_out: array<f32>;
@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n) { return; }
    fill_out[i] = p.alpha;
}

// ---- binary: out = alpha * a + beta * b   (add: 1,1; sub: 1,-1; axpy: 1,s)
@group(0) @binding(1) var<storage, read> lin_a: array<f32>;
@group(0) @binding(2) var<storage, read> lin_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> lin_out: array<f32>;
@compute @workgroup_size(256)
fn lincomb_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n) { return; }
    lin_out[i] = p.alpha * lin_a[i] + p.beta * lin_b[i];
}

// ---- mul: out = a * b
@compute @workgroup_size(256)
fn mul_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n) { return; }
    lin_out[i] = lin_a[i] * lin_b[i];
}

// ---- unary with a scalar: scale (out = alpha * x + beta), relu, leaky relu, sigmoid
@group(0) @binding(1) var<storage, read> un_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> un_out: array<f32>;

@compute @workgroup_size(256)
fn affine_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n) { return; }
    un_out[i] = p.alpha * un_x[i] + p.beta;
}

// leaky relu with slope alpha (relu: alpha = 0)
@compute @workgroup_size(256)
fn leaky_relu_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n) { return; }
    let x = un_x[i];
    un_out[i] = select(p.alpha * x, x, x > 0.0);
}

@compute @workgroup_size(256)
fn sigmoid_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n) { return; }
    let x = un_x[i];
    // Stable on both sides: never exp of a large positive number.
    let e = exp(-abs(x));
    un_out[i] = select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}

// Backwards that need the forward's input or output (saved) and the upstream gradient.
@group(0) @binding(1) var<storage, read> bw_saved: array<f32>;
@group(0) @binding(2) var<storage, read> bw_g: array<f32>;
@group(0) @binding(3) var<storage, read_write> bw_gx: array<f32>;

// saved = x; gx = g where x > 0 else alpha * g  (PyTorch: x == 0 takes the slope)
@compute @workgroup_size(256)
fn leaky_relu_bwd_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n) { return; }
    bw_gx[i] = select(p.alpha * bw_g[i], bw_g[i], bw_saved[i] > 0.0);
}

// saved = y = sigmoid(x); gx = g * y * (1 - y)
@compute @workgroup_size(256)
fn sigmoid_bwd_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n) { return; }
    let y = bw_saved[i];
    bw_gx[i] = bw_g[i] * y * (1.0 - y);
}

// ---- channel bias: out[o, c, s] = x[o, c, s] + b[c]
@group(0) @binding(1) var<storage, read> bias_x: array<f32>;
@group(0) @binding(2) var<storage, read> bias_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> bias_out: array<f32>;
@compute @workgroup_size(256)
fn bias_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n) { return; }
    bias_out[i] = bias_x[i] + bias_b[((p.base + i) / p.inner) % p.c];
}

// ---- contiguous ranges along the batch axis: out[i] = x[off + i]; place: out[off + i] = g[i]
// (off in `c`; n = elements copied). `place_range` writes only its range: the caller zero-fills.
@group(0) @binding(1) var<storage, read> rg_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> rg_out: array<f32>;
@compute @workgroup_size(256)
fn copy_range(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n) { return; }
    rg_out[i] = rg_x[p.c + i];
}
@compute @workgroup_size(256)
fn place_range(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n) { return; }
    rg_out[p.c + i] = rg_x[i];
}

// ---- division: out = a / b (same shapes)
@compute @workgroup_size(256)
fn div_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n) { return; }
    lin_out[i] = lin_a[i] / lin_b[i];
}

// ---- uniform noise U[0, 1) from a counter-based hash of (seed, index): the same seed gives
// the same tensor on every adapter. Seed words in c (low) and inner (high).
fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}
@group(0) @binding(1) var<storage, read_write> un_noise: array<f32>;
@compute @workgroup_size(256)
fn uniform_fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n) { return; }
    let h = pcg_hash(pcg_hash((p.base + i) ^ p.c) + p.inner);
    un_noise[i] = f32(h >> 8u) * (1.0 / 16777216.0);
}
