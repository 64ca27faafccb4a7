// Batch normalisation over [N, C, S] (S = product of the spatial sizes, 1 for BatchNorm1d),
// with an optional fused activation after the affine, forward and backward.
//
// Binding contract: @binding(0) params (uniform BnParams), then the storage buffers in the
// order src/ops/norm.rs passes them (listed above each entry point).
//
// Per-channel reductions are deterministic, never atomics: the M = N*S values of a channel,
// enumerated as j = n*S + s, are cut into K chunks of `chunk` values; one 256-wide workgroup
// per (channel, chunk) reduces its chunk (each thread a strided sequential sum, then a fixed
// tree in workgroup memory) into a partial; one invocation per channel then combines the K
// partials in chunk order.
//
// Workgroup o handles channel c = o % C of chunk kk = o / C (the C workgroups of one chunk
// are adjacent, so they share its cache lines); partials are stored at [c, kk].
// Row layout (S == 1, C <= 256: BatchNorm1d over [rows, C]): *_rows entry points instead
// give workgroup kk all channels of rows chunk kk: thread t accumulates channel t % C of
// rows t / C, t / C + Q, ... (Q = 256 / C rows per sweep, reads coalesced), then thread
// c < C sums the Q per-thread values of channel c in order.
//
// Statistics: each chunk stores its own mean m_k and M2_k = sum (x - m_k)^2 (two passes over
// the chunk: the chunk's mean first, then the squared deviations from it). The channel's
// mean is sum n_k m_k / M and M2 = sum M2_k + n_k (m_k - mean)^2 (Chan et al.), so the
// variance is a mean of squared deviations, never E[x^2] - E[x]^2.
//
// stats layout [2, C]: stats[c] = mean, stats[C + c] = 1 / sqrt(var + eps).
// act: 0 = none, 1 = leaky relu with slope `slope` (relu: slope 0). The derivative at z == 0
// is the slope (as PyTorch's threshold / leaky relu backward).
// mode: 0 = train (running statistics updated), 1 = eval, 2 = frozen (batch statistics,
// running statistics untouched).

struct BnParams {
    n: u32,
    c: u32,
    s: u32,
    m: u32,
    k: u32,
    chunk: u32,
    mode: u32,
    act: u32,
    momentum: f32,
    eps: f32,
    slope: f32,
    total: u32,
}

@group(0) @binding(0) var<uniform> p: BnParams;

var<workgroup> red_a: array<f32, 256>;
var<workgroup> red_b: array<f32, 256>;

fn gid(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// Flat index of the j-th value (j = n*S + s) of channel c.
fn addr(c: u32, j: u32) -> u32 {
    let n = j / p.s;
    return (n * p.c + c) * p.s + (j - n * p.s);
}

// Number of values in chunk kk.
fn chunk_len(kk: u32) -> u32 {
    return min(p.m, (kk + 1u) * p.chunk) - kk * p.chunk;
}

// The activation applied to the pre-activation z, and its derivative factor.
fn act_fwd(z: f32) -> f32 {
    return select(z * p.slope, z, z > 0.0 || p.act == 0u);
}

fn act_grad(z: f32) -> f32 {
    return select(p.slope, 1.0, z > 0.0 || p.act == 0u);
}

// ---- statistics, pass 1: per (channel, chunk) mean and M2 -> part [C, K, 2]
@group(0) @binding(1) var<storage, read> sp_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> sp_part: array<f32>;

@compute @workgroup_size(256)
fn bn_stats_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = wid.y * nwg.x + wid.x;
    if (o >= p.c * p.k) { return; } // uniform across the workgroup
    let c = o % p.c;
    let kk = o / p.c;
    let j0 = kk * p.chunk;
    let j1 = min(p.m, j0 + p.chunk);
    var acc = 0.0;
    for (var j = j0 + lid.x; j < j1; j = j + 256u) {
        acc = acc + sp_x[addr(c, j)];
    }
    red_a[lid.x] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid.x < s) {
            red_a[lid.x] = red_a[lid.x] + red_a[lid.x + s];
        }
        workgroupBarrier();
    }
    let mk = red_a[0] / f32(j1 - j0);
    workgroupBarrier();
    var acc2 = 0.0;
    for (var j = j0 + lid.x; j < j1; j = j + 256u) {
        let d = sp_x[addr(c, j)] - mk;
        acc2 = acc2 + d * d;
    }
    red_a[lid.x] = acc2;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid.x < s) {
            red_a[lid.x] = red_a[lid.x] + red_a[lid.x + s];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        sp_part[(c * p.k + kk) * 2u] = mk;
        sp_part[(c * p.k + kk) * 2u + 1u] = red_a[0];
    }
}

// Row layout: the sum over the Q threads of each channel, in order, by thread c < C.
// Expects the per-thread values in `red_a` (and `red_b`); leaves the channel sums in
// red_a[c] (red_b[c]) after the call. Called in uniform control flow.
fn rows_channel_sums(lid: u32, q: u32, both: bool) {
    workgroupBarrier();
    var a = 0.0;
    var b = 0.0;
    if (lid < p.c) {
        for (var i = 0u; i < q; i = i + 1u) {
            a = a + red_a[lid + i * p.c];
            if (both) {
                b = b + red_b[lid + i * p.c];
            }
        }
    }
    workgroupBarrier();
    if (lid < p.c) {
        red_a[lid] = a;
        red_b[lid] = b;
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn bn_stats_partial_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let kk = wid.y * nwg.x + wid.x;
    if (kk >= p.k) { return; } // uniform across the workgroup
    let q = 256u / p.c;
    let c = lid.x % p.c;
    let r = lid.x / p.c; // < q for the active threads
    let j0 = kk * p.chunk;
    let j1 = min(p.m, j0 + p.chunk);
    var acc = 0.0;
    if (r < q) {
        for (var j = j0 + r; j < j1; j = j + q) {
            acc = acc + sp_x[j * p.c + c];
        }
    }
    red_a[lid.x] = acc;
    rows_channel_sums(lid.x, q, false);
    let mk = red_a[c] / f32(j1 - j0);
    workgroupBarrier();
    var acc2 = 0.0;
    if (r < q) {
        for (var j = j0 + r; j < j1; j = j + q) {
            let d = sp_x[j * p.c + c] - mk;
            acc2 = acc2 + d * d;
        }
    }
    red_a[lid.x] = acc2;
    rows_channel_sums(lid.x, q, false);
    if (lid.x < p.c) {
        sp_part[(c * p.k + kk) * 2u] = mk;
        sp_part[(c * p.k + kk) * 2u + 1u] = red_a[c];
    }
}

// ---- statistics, pass 2: one invocation per channel combines its K partials in order;
// train mode also updates the running statistics in place (unbiased variance).
@group(0) @binding(1) var<storage, read> sf_part: array<f32>;
@group(0) @binding(2) var<storage, read_write> sf_rmean: array<f32>;
@group(0) @binding(3) var<storage, read_write> sf_rvar: array<f32>;
@group(0) @binding(4) var<storage, read_write> sf_stats: array<f32>;

@compute @workgroup_size(256)
fn bn_stats_final(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = gid(wid, nwg, lid);
    if (c >= p.c) { return; }
    var sum = 0.0;
    for (var kk = 0u; kk < p.k; kk = kk + 1u) {
        sum = sum + f32(chunk_len(kk)) * sf_part[(c * p.k + kk) * 2u];
    }
    let mean = sum / f32(p.m);
    var m2 = 0.0;
    for (var kk = 0u; kk < p.k; kk = kk + 1u) {
        let d = sf_part[(c * p.k + kk) * 2u] - mean;
        m2 = m2 + sf_part[(c * p.k + kk) * 2u + 1u] + f32(chunk_len(kk)) * d * d;
    }
    let var_b = m2 / f32(p.m);
    sf_stats[c] = mean;
    sf_stats[p.c + c] = 1.0 / sqrt(var_b + p.eps);
    if (p.mode == 0u) {
        let var_u = m2 / f32(p.m - 1u);
        sf_rmean[c] = (1.0 - p.momentum) * sf_rmean[c] + p.momentum * mean;
        sf_rvar[c] = (1.0 - p.momentum) * sf_rvar[c] + p.momentum * var_u;
    }
}

// ---- eval statistics from the running ones
@group(0) @binding(1) var<storage, read> se_rmean: array<f32>;
@group(0) @binding(2) var<storage, read> se_rvar: array<f32>;
@group(0) @binding(3) var<storage, read_write> se_stats: array<f32>;

@compute @workgroup_size(256)
fn bn_stats_eval(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = gid(wid, nwg, lid);
    if (c >= p.c) { return; }
    se_stats[c] = se_rmean[c];
    se_stats[p.c + c] = 1.0 / sqrt(se_rvar[c] + p.eps);
}

// ---- normalise, affine, activation: y = act(gamma * (x - mean) * invstd + beta)
@group(0) @binding(1) var<storage, read> ap_x: array<f32>;
@group(0) @binding(2) var<storage, read> ap_stats: array<f32>;
@group(0) @binding(3) var<storage, read> ap_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> ap_beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> ap_y: array<f32>;

@compute @workgroup_size(256)
fn bn_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.total) { return; }
    let c = (i / p.s) % p.c;
    let xh = (ap_x[i] - ap_stats[c]) * ap_stats[p.c + c];
    ap_y[i] = act_fwd(ap_gamma[c] * xh + ap_beta[c]);
}

// ---- backward, pass 1: per (channel, chunk) sums of gz and gz * xhat -> part [C, K, 2],
// gz = g * act'(z) (the gradient at the pre-activation, recomputed from x).
@group(0) @binding(1) var<storage, read> bp_x: array<f32>;
@group(0) @binding(2) var<storage, read> bp_stats: array<f32>;
@group(0) @binding(3) var<storage, read> bp_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> bp_beta: array<f32>;
@group(0) @binding(5) var<storage, read> bp_g: array<f32>;
@group(0) @binding(6) var<storage, read_write> bp_part: array<f32>;

@compute @workgroup_size(256)
fn bn_bwd_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = wid.y * nwg.x + wid.x;
    if (o >= p.c * p.k) { return; } // uniform across the workgroup
    let c = o % p.c;
    let kk = o / p.c;
    let j0 = kk * p.chunk;
    let j1 = min(p.m, j0 + p.chunk);
    let mean = bp_stats[c];
    let inv = bp_stats[p.c + c];
    let gm = bp_gamma[c];
    let bt = bp_beta[c];
    var a = 0.0;
    var b = 0.0;
    for (var j = j0 + lid.x; j < j1; j = j + 256u) {
        let i = addr(c, j);
        let xh = (bp_x[i] - mean) * inv;
        let gz = bp_g[i] * act_grad(gm * xh + bt);
        a = a + gz;
        b = b + gz * xh;
    }
    red_a[lid.x] = a;
    red_b[lid.x] = b;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid.x < s) {
            red_a[lid.x] = red_a[lid.x] + red_a[lid.x + s];
            red_b[lid.x] = red_b[lid.x] + red_b[lid.x + s];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        bp_part[(c * p.k + kk) * 2u] = red_a[0];
        bp_part[(c * p.k + kk) * 2u + 1u] = red_b[0];
    }
}

@compute @workgroup_size(256)
fn bn_bwd_partial_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let kk = wid.y * nwg.x + wid.x;
    if (kk >= p.k) { return; } // uniform across the workgroup
    let q = 256u / p.c;
    let c = lid.x % p.c;
    let r = lid.x / p.c;
    let j0 = kk * p.chunk;
    let j1 = min(p.m, j0 + p.chunk);
    let mean = bp_stats[c];
    let inv = bp_stats[p.c + c];
    let gm = bp_gamma[c];
    let bt = bp_beta[c];
    var a = 0.0;
    var b = 0.0;
    if (r < q) {
        for (var j = j0 + r; j < j1; j = j + q) {
            let i = j * p.c + c;
            let xh = (bp_x[i] - mean) * inv;
            let gz = bp_g[i] * act_grad(gm * xh + bt);
            a = a + gz;
            b = b + gz * xh;
        }
    }
    red_a[lid.x] = a;
    red_b[lid.x] = b;
    rows_channel_sums(lid.x, q, true);
    if (lid.x < p.c) {
        bp_part[(c * p.k + kk) * 2u] = red_a[c];
        bp_part[(c * p.k + kk) * 2u + 1u] = red_b[c];
    }
}

// ---- backward, pass 2: one invocation per channel sums its K partials in order:
// gbeta = sum gz, ggamma = sum gz * xhat, coef = [sum gz / M ; sum gz * xhat / M].
@group(0) @binding(1) var<storage, read> bf_part: array<f32>;
@group(0) @binding(2) var<storage, read_write> bf_gbeta: array<f32>;
@group(0) @binding(3) var<storage, read_write> bf_ggamma: array<f32>;
@group(0) @binding(4) var<storage, read_write> bf_coef: array<f32>;

@compute @workgroup_size(256)
fn bn_bwd_final(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = gid(wid, nwg, lid);
    if (c >= p.c) { return; }
    var a = 0.0;
    var b = 0.0;
    for (var kk = 0u; kk < p.k; kk = kk + 1u) {
        a = a + bf_part[(c * p.k + kk) * 2u];
        b = b + bf_part[(c * p.k + kk) * 2u + 1u];
    }
    bf_gbeta[c] = a;
    bf_ggamma[c] = b;
    bf_coef[c] = a / f32(p.m);
    bf_coef[p.c + c] = b / f32(p.m);
}

// ---- input gradient with batch statistics (train, frozen):
// gx = gamma * invstd * (gz - mean(gz) - xhat * mean(gz * xhat))
@group(0) @binding(1) var<storage, read> bi_x: array<f32>;
@group(0) @binding(2) var<storage, read> bi_stats: array<f32>;
@group(0) @binding(3) var<storage, read> bi_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> bi_beta: array<f32>;
@group(0) @binding(5) var<storage, read> bi_g: array<f32>;
@group(0) @binding(6) var<storage, read> bi_coef: array<f32>;
@group(0) @binding(7) var<storage, read_write> bi_gx: array<f32>;

@compute @workgroup_size(256)
fn bn_bwd_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.total) { return; }
    let c = (i / p.s) % p.c;
    let inv = bi_stats[p.c + c];
    let xh = (bi_x[i] - bi_stats[c]) * inv;
    let gm = bi_gamma[c];
    let gz = bi_g[i] * act_grad(gm * xh + bi_beta[c]);
    bi_gx[i] = gm * inv * (gz - bi_coef[c] - xh * bi_coef[p.c + c]);
}

// ---- input gradient with the running statistics (eval): gx = gamma * invstd * gz
@group(0) @binding(1) var<storage, read> be_x: array<f32>;
@group(0) @binding(2) var<storage, read> be_stats: array<f32>;
@group(0) @binding(3) var<storage, read> be_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> be_beta: array<f32>;
@group(0) @binding(5) var<storage, read> be_g: array<f32>;
@group(0) @binding(6) var<storage, read_write> be_gx: array<f32>;

@compute @workgroup_size(256)
fn bn_bwd_input_eval(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.total) { return; }
    let c = (i / p.s) % p.c;
    let inv = be_stats[p.c + c];
    let xh = (be_x[i] - be_stats[c]) * inv;
    let gm = be_gamma[c];
    let gz = be_g[i] * act_grad(gm * xh + be_beta[c]);
    be_gx[i] = gm * inv * gz;
}
