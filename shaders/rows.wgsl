// Row-wise ops on [M, D] matrices and the voxel-row plumbing of SS-Net's heads.
//
// - l2norm_rows: y = x / max(|x|, eps) per row (PyTorch F.normalize); one invocation per row.
// - to_rows / from_rows: [N, C, S] <-> [N*S, C] (channels-last voxel rows).
// - int ops on u32 label maps: eq / correct-foreground masks.
// - compaction of a u32 mask into the list of set row indices, in row order:
//   block_count (per 256-row block), block_scan (one workgroup, fixed order),
//   compact (per block: local exclusive scan + block offset). Deterministic.
// - gather_rows / scatter_rows on raw 32-bit words (f32 or u32 alike).
// 1-D grids are folded into 2-D: linear id = (wid.y * nwg.x + wid.x) * 256 + lid.x.

struct RowParams {
    m: u32,      // rows (or elements)
    d: u32,      // row length / channels
    s: u32,      // spatial size (to_rows / from_rows)
    v: u32,      // a class value, a block count, ...
    eps: f32,
    _p0: f32,
    _p1: f32,
    _p2: f32,
}

@group(0) @binding(0) var<uniform> p: RowParams;

fn gid(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

@group(0) @binding(1) var<storage, read> l2_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> l2_y: array<f32>;

@compute @workgroup_size(256)
fn l2norm_rows_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = gid(wid, nwg, lid);
    if (r >= p.m) { return; }
    var ss = 0.0;
    for (var j = 0u; j < p.d; j = j + 1u) {
        let v = l2_x[r * p.d + j];
        ss = ss + v * v;
    }
    let nrm = max(sqrt(ss), p.eps);
    for (var j = 0u; j < p.d; j = j + 1u) {
        l2_y[r * p.d + j] = l2_x[r * p.d + j] / nrm;
    }
}

// gx = (g - y (g·y)) / |x| when |x| > eps, else g / eps
@group(0) @binding(1) var<storage, read> l2b_x: array<f32>;
@group(0) @binding(2) var<storage, read> l2b_g: array<f32>;
@group(0) @binding(3) var<storage, read_write> l2b_gx: array<f32>;

@compute @workgroup_size(256)
fn l2norm_rows_bwd_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = gid(wid, nwg, lid);
    if (r >= p.m) { return; }
    var ss = 0.0;
    for (var j = 0u; j < p.d; j = j + 1u) {
        let v = l2b_x[r * p.d + j];
        ss = ss + v * v;
    }
    let nrm = sqrt(ss);
    if (nrm <= p.eps) {
        for (var j = 0u; j < p.d; j = j + 1u) {
            l2b_gx[r * p.d + j] = l2b_g[r * p.d + j] / p.eps;
        }
        return;
    }
    var gy = 0.0;
    for (var j = 0u; j < p.d; j = j + 1u) {
        gy = gy + l2b_g[r * p.d + j] * l2b_x[r * p.d + j];
    }
    gy = gy / nrm; // g·y
    for (var j = 0u; j < p.d; j = j + 1u) {
        let y = l2b_x[r * p.d + j] / nrm;
        l2b_gx[r * p.d + j] = (l2b_g[r * p.d + j] - y * gy) / nrm;
    }
}

// [N, C, S] -> [N*S, C]; m = N*S, d = C, s = S. One invocation per output element.
@group(0) @binding(1) var<storage, read> pr_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> pr_out: array<f32>;

@compute @workgroup_size(256)
fn to_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.m * p.d) { return; }
    let row = i / p.d;
    let c = i % p.d;
    let n = row / p.s;
    let s = row % p.s;
    pr_out[i] = pr_in[(n * p.d + c) * p.s + s];
}

// [N*S, C] -> [N, C, S]
@compute @workgroup_size(256)
fn from_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.m * p.d) { return; }
    let s = i % p.s;
    let c = (i / p.s) % p.d;
    let n = i / (p.s * p.d);
    pr_out[i] = pr_in[(n * p.s + s) * p.d + c];
}

// ---- u32 masks: out = (a == v); out = (a == b) & (a > 0)
@group(0) @binding(1) var<storage, read> im_a: array<u32>;
@group(0) @binding(2) var<storage, read_write> im_out: array<u32>;

@compute @workgroup_size(256)
fn eq_value(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.m) { return; }
    im_out[i] = select(0u, 1u, im_a[i] == p.v);
}

@group(0) @binding(1) var<storage, read> cf_pred: array<u32>;
@group(0) @binding(2) var<storage, read> cf_label: array<u32>;
@group(0) @binding(3) var<storage, read_write> cf_out: array<u32>;

@compute @workgroup_size(256)
fn correct_foreground(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.m) { return; }
    let a = cf_pred[i];
    cf_out[i] = select(0u, 1u, a == cf_label[i] && a > 0u);
}

// ---- compaction
@group(0) @binding(1) var<storage, read> bc_mask: array<u32>;
@group(0) @binding(2) var<storage, read_write> bc_counts: array<u32>;

var<workgroup> wsum: array<u32, 256>;

// counts[block] = number of set entries in rows [block*256, block*256+256)
@compute @workgroup_size(256)
fn block_count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let blk = wid.y * nwg.x + wid.x;
    if (blk >= p.v) { return; }
    let i = blk * 256u + lid.x;
    var v = 0u;
    if (i < p.m && bc_mask[i] != 0u) { v = 1u; }
    wsum[lid.x] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid.x < s) { wsum[lid.x] = wsum[lid.x] + wsum[lid.x + s]; }
        workgroupBarrier();
    }
    if (lid.x == 0u) { bc_counts[blk] = wsum[0]; }
}

// offsets[b] = sum of counts[0..b); offsets[nblocks] = total. One workgroup: each invocation
// sums a contiguous run of blocks, then a scan over the 256 run totals.
@group(0) @binding(1) var<storage, read> bs_counts: array<u32>;
@group(0) @binding(2) var<storage, read_write> bs_offsets: array<u32>;

@compute @workgroup_size(256)
fn block_scan(@builtin(local_invocation_id) lid: vec3<u32>) {
    let nb = p.v;
    let per = (nb + 255u) / 256u;
    let b0 = min(nb, lid.x * per);
    let b1 = min(nb, b0 + per);
    var run = 0u;
    for (var b = b0; b < b1; b = b + 1u) { run = run + bs_counts[b]; }
    wsum[lid.x] = run;
    workgroupBarrier();
    if (lid.x == 0u) {
        var acc = 0u;
        for (var t = 0u; t < 256u; t = t + 1u) {
            let r = wsum[t];
            wsum[t] = acc;
            acc = acc + r;
        }
        bs_offsets[nb] = acc;
    }
    workgroupBarrier();
    var acc = wsum[lid.x];
    for (var b = b0; b < b1; b = b + 1u) {
        bs_offsets[b] = acc;
        acc = acc + bs_counts[b];
    }
}

@group(0) @binding(1) var<storage, read> cp_mask: array<u32>;
@group(0) @binding(2) var<storage, read> cp_offsets: array<u32>;
@group(0) @binding(3) var<storage, read_write> cp_idx: array<u32>;

@compute @workgroup_size(256)
fn compact(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let blk = wid.y * nwg.x + wid.x;
    if (blk >= p.v) { return; }
    let i = blk * 256u + lid.x;
    var v = 0u;
    if (i < p.m && cp_mask[i] != 0u) { v = 1u; }
    wsum[lid.x] = v;
    workgroupBarrier();
    // Hillis-Steele inclusive scan.
    for (var s = 1u; s < 256u; s = s << 1u) {
        var add = 0u;
        if (lid.x >= s) { add = wsum[lid.x - s]; }
        workgroupBarrier();
        wsum[lid.x] = wsum[lid.x] + add;
        workgroupBarrier();
    }
    if (v == 1u) {
        cp_idx[cp_offsets[blk] + wsum[lid.x] - 1u] = i;
    }
}

// out[r, j] = x[idx[r], j] on raw words; m = selected rows, d = row length
@group(0) @binding(1) var<storage, read> ga_x: array<u32>;
@group(0) @binding(2) var<storage, read> ga_idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> ga_out: array<u32>;

@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.m * p.d) { return; }
    let r = i / p.d;
    let j = i % p.d;
    ga_out[i] = ga_x[ga_idx[r] * p.d + j];
}

// out[idx[r], j] = g[r, j] (out zero-filled before; indices are distinct, so every
// element has at most one writer)
@group(0) @binding(1) var<storage, read> sc_g: array<u32>;
@group(0) @binding(2) var<storage, read> sc_idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> sc_out: array<u32>;

@compute @workgroup_size(256)
fn scatter_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.m * p.d) { return; }
    let r = i / p.d;
    let j = i % p.d;
    sc_out[sc_idx[r] * p.d + j] = sc_g[i];
}

// out[i] = x[i] / (sqrt(sumsq[i / d]) + eps): rows divided by their norm plus eps (the
// reference VAT's per-sample normalisation; the sums of squares come from a reduction).
@group(0) @binding(1) var<storage, read> sn_x: array<f32>;
@group(0) @binding(2) var<storage, read> sn_sq: array<f32>;
@group(0) @binding(3) var<storage, read_write> sn_out: array<f32>;

@compute @workgroup_size(256)
fn normalize_by_sumsq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.m * p.d) { return; }
    sn_out[i] = sn_x[i] / (sqrt(sn_sq[i / p.d]) + p.eps);
}
