// Losses on [N, C, S] tensors (S = product of spatial dims; element (n, c, s) at
// (n * C + c) * S + s) with u32 label maps [N, S] or soft targets [N, C, S].
//
// Cross-entropy: ce_fwd writes the per-voxel loss (summed and scaled by the caller's
// deterministic reduction); ce_bwd writes (softmax - onehot) * g[0] * scale.
//
// Dice family, from three statistics per class c:
//   I_c = sum p·t,  P_c = sum p^k,  T_c = sum t^k   (k = 1 or 2)
// dice_partial_*: one 256-wide workgroup per (chunk, class), partial[(chunk*C + c)*3 + j],
//   fixed tree; the caller sums the chunks in order (no atomics).
// dice_loss_fwd: one invocation turns the C*3 statistics into the loss (mode below).
// dice_bwd: dL/dp = g[0] * (dL/dI_c * t + dL/dP_c * k * p^(k-1)).
// Modes: 0 = binary on channel 1 (SS-Net's 3D supervised loss), 1 = whole tensor (sums over
// every channel: SS-Net's 3D VAT distance), 2 = mean over classes of per-class Dice loss.
// A label IGNORE (0xffffffff, AD-MT's unconfident voxels) drops the voxel from the label
// Dice: neither p nor t counts there, and its gradient is 0.
//
// Masked cross-entropy (AD-MT's ignore-index CE, mean over the voxels whose label is not
// IGNORE): ce_fwd_masked writes the per-voxel loss and a 0/1 count side by side
// (out[i], out[N*S + i]); the caller sums each half in order; ce_masked_finish turns the two
// sums into the loss (0 when nothing is valid: PyTorch's 0/0 NaN would poison the weights)
// and 1/count; ce_bwd_masked scales by that 1/count read from memory.

const IGNORE: u32 = 0xffffffffu;

struct LossParams {
    n: u32,
    c: u32,
    s: u32,
    chunks: u32,
    chunk: u32,
    mode: u32,
    power: u32,
    _pad: u32,
    eps: f32,
    scale: f32,
    _p1: f32,
    _p2: f32,
}

@group(0) @binding(0) var<uniform> p: LossParams;

fn gid(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// ---- cross-entropy (both entry points read logits at binding 1 and labels at binding 2)
@group(0) @binding(1) var<storage, read> ce_x: array<f32>;
@group(0) @binding(2) var<storage, read> ce_y: array<u32>;
@group(0) @binding(3) var<storage, read_write> ce_out: array<f32>;

// (max, sum of exp(x - max)) over the channels of voxel `base`.
fn ce_stats(base: u32) -> vec2<f32> {
    var m = ce_x[base];
    for (var c = 1u; c < p.c; c = c + 1u) { m = max(m, ce_x[base + c * p.s]); }
    var z = 0.0;
    for (var c = 0u; c < p.c; c = c + 1u) { z = z + exp(ce_x[base + c * p.s] - m); }
    return vec2<f32>(m, z);
}

@compute @workgroup_size(256)
fn ce_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n * p.s) { return; }
    let base = (i / p.s) * p.c * p.s + i % p.s;
    let st = ce_stats(base);
    let lab = min(ce_y[i], p.c - 1u);
    ce_out[i] = log(st.y) + st.x - ce_x[base + lab * p.s];
}

@group(0) @binding(3) var<storage, read> cb_g: array<f32>;
@group(0) @binding(4) var<storage, read_write> cb_gx: array<f32>;

@compute @workgroup_size(256)
fn ce_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n * p.s) { return; }
    let base = (i / p.s) * p.c * p.s + i % p.s;
    let st = ce_stats(base);
    let lab = ce_y[i];
    let gs = cb_g[0] * p.scale;
    for (var c = 0u; c < p.c; c = c + 1u) {
        let sm = exp(ce_x[base + c * p.s] - st.x) / st.y;
        cb_gx[base + c * p.s] = (sm - select(0.0, 1.0, c == lab)) * gs;
    }
}

@compute @workgroup_size(256)
fn ce_fwd_masked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    let total = p.n * p.s;
    if (i >= total) { return; }
    let lab = ce_y[i];
    if (lab == IGNORE) {
        ce_out[i] = 0.0;
        ce_out[total + i] = 0.0;
        return;
    }
    let base = (i / p.s) * p.c * p.s + i % p.s;
    let st = ce_stats(base);
    ce_out[i] = log(st.y) + st.x - ce_x[base + min(lab, p.c - 1u) * p.s];
    ce_out[total + i] = 1.0;
}

// The two sums [loss, count] (binding 1) into the loss (binding 2) and 1/count (binding 3),
// both times p.scale (1 for the plain mean).
@group(0) @binding(1) var<storage, read> cf_sums: array<f32>;
@group(0) @binding(2) var<storage, read_write> cf_loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> cf_inv: array<f32>;

@compute @workgroup_size(1)
fn ce_masked_finish() {
    let count = cf_sums[1];
    let inv = select(0.0, p.scale / count, count > 0.0);
    cf_loss[0] = cf_sums[0] * inv;
    cf_inv[0] = inv;
}

@group(0) @binding(4) var<storage, read> cbm_inv: array<f32>;
@group(0) @binding(5) var<storage, read_write> cbm_gx: array<f32>;

@compute @workgroup_size(256)
fn ce_bwd_masked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n * p.s) { return; }
    let base = (i / p.s) * p.c * p.s + i % p.s;
    let lab = ce_y[i];
    if (lab == IGNORE) {
        for (var c = 0u; c < p.c; c = c + 1u) { cbm_gx[base + c * p.s] = 0.0; }
        return;
    }
    let st = ce_stats(base);
    let gs = cb_g[0] * cbm_inv[0];
    for (var c = 0u; c < p.c; c = c + 1u) {
        let sm = exp(ce_x[base + c * p.s] - st.x) / st.y;
        cbm_gx[base + c * p.s] = (sm - select(0.0, 1.0, c == lab)) * gs;
    }
}

// ---- Dice statistics
var<workgroup> w_i: array<f32, 256>;
var<workgroup> w_p: array<f32, 256>;
var<workgroup> w_t: array<f32, 256>;

fn powk(v: f32) -> f32 {
    return select(v, v * v, p.power == 2u);
}

fn tree_sum3(lid: u32) {
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            w_i[lid] = w_i[lid] + w_i[lid + s];
            w_p[lid] = w_p[lid] + w_p[lid + s];
            w_t[lid] = w_t[lid] + w_t[lid + s];
        }
        workgroupBarrier();
    }
}

@group(0) @binding(1) var<storage, read> dl_p: array<f32>;
@group(0) @binding(2) var<storage, read> dl_y: array<u32>;
@group(0) @binding(3) var<storage, read_write> dl_out: array<f32>;

@compute @workgroup_size(256)
fn dice_partial_labels(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = wid.y * nwg.x + wid.x;   // chunk * C + c
    if (o >= p.chunks * p.c) { return; }
    let c = o % p.c;
    let k = o / p.c;
    let total = p.n * p.s;
    let e0 = k * p.chunk;
    let e1 = min(total, e0 + p.chunk);
    var si = 0.0; var sp = 0.0; var st = 0.0;
    for (var e = e0 + lid.x; e < e1; e = e + 256u) {
        if (dl_y[e] == IGNORE) { continue; }
        let pv = dl_p[((e / p.s) * p.c + c) * p.s + e % p.s];
        let tv = select(0.0, 1.0, dl_y[e] == c);
        si = si + pv * tv;
        sp = sp + powk(pv);
        st = st + tv;
    }
    w_i[lid.x] = si; w_p[lid.x] = sp; w_t[lid.x] = st;
    tree_sum3(lid.x);
    if (lid.x == 0u) {
        dl_out[o * 3u] = w_i[0];
        dl_out[o * 3u + 1u] = w_p[0];
        dl_out[o * 3u + 2u] = w_t[0];
    }
}

@group(0) @binding(1) var<storage, read> ds_p: array<f32>;
@group(0) @binding(2) var<storage, read> ds_q: array<f32>;
@group(0) @binding(3) var<storage, read_write> ds_out: array<f32>;

@compute @workgroup_size(256)
fn dice_partial_soft(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = wid.y * nwg.x + wid.x;
    if (o >= p.chunks * p.c) { return; }
    let c = o % p.c;
    let k = o / p.c;
    let total = p.n * p.s;
    let e0 = k * p.chunk;
    let e1 = min(total, e0 + p.chunk);
    var si = 0.0; var sp = 0.0; var st = 0.0;
    for (var e = e0 + lid.x; e < e1; e = e + 256u) {
        let at = ((e / p.s) * p.c + c) * p.s + e % p.s;
        let pv = ds_p[at];
        let tv = ds_q[at];
        si = si + pv * tv;
        sp = sp + powk(pv);
        st = st + powk(tv);
    }
    w_i[lid.x] = si; w_p[lid.x] = sp; w_t[lid.x] = st;
    tree_sum3(lid.x);
    if (lid.x == 0u) {
        ds_out[o * 3u] = w_i[0];
        ds_out[o * 3u + 1u] = w_p[0];
        ds_out[o * 3u + 2u] = w_t[0];
    }
}

// The summed statistics [C*3] (I, P, T per class), shared by both backward entry points.
@group(0) @binding(3) var<storage, read> bw_stats: array<f32>;

// dL/dI_c and dL/dP_c from the statistics, for the loss mode; also the loss itself.
struct Coef {
    di: f32,
    dp: f32,
}

fn coef(c: u32) -> Coef {
    var r: Coef;
    if (p.mode == 0u) {
        if (c != 1u) { r.di = 0.0; r.dp = 0.0; return r; }
        let d = bw_stats[4] + bw_stats[5] + p.eps;
        let nn = 2.0 * bw_stats[3] + p.eps;
        r.di = -2.0 / d;
        r.dp = nn / (d * d);
        return r;
    }
    if (p.mode == 1u) {
        var si = 0.0; var sp = 0.0; var st = 0.0;
        for (var k = 0u; k < p.c; k = k + 1u) {
            si = si + bw_stats[k * 3u];
            sp = sp + bw_stats[k * 3u + 1u];
            st = st + bw_stats[k * 3u + 2u];
        }
        let d = sp + st + p.eps;
        r.di = -2.0 / d;
        r.dp = (2.0 * si + p.eps) / (d * d);
        return r;
    }
    let d = bw_stats[c * 3u + 1u] + bw_stats[c * 3u + 2u] + p.eps;
    let nn = 2.0 * bw_stats[c * 3u] + p.eps;
    let cf = f32(p.c);
    r.di = -2.0 / (cf * d);
    r.dp = nn / (cf * d * d);
    return r;
}

@group(0) @binding(1) var<storage, read> lf_stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> lf_out: array<f32>;

// The Dice loss of the per-class statistics [C][intersection, Σp, Σt] in lf_stats (the
// binary kind reads class 1), as p.mode asks: 0 binary, 1 whole, 2 mean over classes.
fn dice_loss_of_stats() -> f32 {
    var loss = 0.0;
    if (p.mode == 0u) {
        loss = 1.0 - (2.0 * lf_stats[3] + p.eps) / (lf_stats[4] + lf_stats[5] + p.eps);
    } else if (p.mode == 1u) {
        var si = 0.0; var sp = 0.0; var st = 0.0;
        for (var k = 0u; k < p.c; k = k + 1u) {
            si = si + lf_stats[k * 3u];
            sp = sp + lf_stats[k * 3u + 1u];
            st = st + lf_stats[k * 3u + 2u];
        }
        loss = 1.0 - (2.0 * si + p.eps) / (sp + st + p.eps);
    } else {
        for (var k = 0u; k < p.c; k = k + 1u) {
            loss = loss + 1.0 - (2.0 * lf_stats[k * 3u] + p.eps) / (lf_stats[k * 3u + 1u] + lf_stats[k * 3u + 2u] + p.eps);
        }
        loss = loss / f32(p.c);
    }
    return loss;
}

@compute @workgroup_size(1)
fn dice_loss_fwd() {
    lf_out[0] = dice_loss_of_stats();
}

@group(0) @binding(1) var<storage, read> db_p: array<f32>;
@group(0) @binding(2) var<storage, read> db_y: array<u32>;
@group(0) @binding(4) var<storage, read> db_g: array<f32>;
@group(0) @binding(5) var<storage, read_write> db_gp: array<f32>;

@compute @workgroup_size(256)
fn dice_bwd_labels(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n * p.c * p.s) { return; }
    let s = i % p.s;
    let c = (i / p.s) % p.c;
    let nn = i / (p.s * p.c);
    let lab = db_y[nn * p.s + s];
    if (lab == IGNORE) { db_gp[i] = 0.0; return; }
    let k = coef(c);
    let t = select(0.0, 1.0, lab == c);
    let pv = db_p[i];
    let dpk = select(1.0, 2.0 * pv, p.power == 2u);
    db_gp[i] = db_g[0] * (k.di * t + k.dp * dpk);
}

@group(0) @binding(1) var<storage, read> dbs_p: array<f32>;
@group(0) @binding(2) var<storage, read> dbs_q: array<f32>;
@group(0) @binding(4) var<storage, read> dbs_g: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbs_gp: array<f32>;

@compute @workgroup_size(256)
fn dice_bwd_soft(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n * p.c * p.s) { return; }
    let c = (i / p.s) % p.c;
    let k = coef(c);
    let pv = dbs_p[i];
    let dpk = select(1.0, 2.0 * pv, p.power == 2u);
    dbs_gp[i] = dbs_g[0] * (k.di * dbs_q[i] + k.dp * dpk);
}

// ---- fused softmax + Dice against a label map: logits x [N, C, S], labels [N, S].
// The softmax is computed per voxel in registers, with the expression of softmax.wgsl
// (p_c = exp(x_c - max) / sum exp(x_j - max)); p never reaches memory.
//
// sdice_partial: workgroup o = chunk * G + grp, G = ceil(C / 4) groups of 4 classes; each
// invocation walks its voxels e = e0 + lid, e0 + lid + 256, ... of the chunk in order,
// accumulating (I, P, T) for the group's classes, then a fixed tree over the 256
// invocations: the same order per class as dice_partial_labels. Output
// partial[chunk * W + c * 3 + j] with W = 3C + 1; partial[chunk * W + 3C] (group 0 only)
// counts the labels >= C. The caller sums the chunks in order (no atomics).
// sdice_loss_fwd: the loss from the summed statistics (as dice_loss_fwd; NaN when any
// label is out of range) and the out-of-range count.
// sdice_bwd: one invocation per voxel; dL/dp_c as dice_bwd_labels, then the softmax
// Jacobian in registers: dL/dx_c = p_c (dL/dp_c - sum_j dL/dp_j p_j).
@group(0) @binding(1) var<storage, read> sd_x: array<f32>;
@group(0) @binding(2) var<storage, read> sd_y: array<u32>;
@group(0) @binding(3) var<storage, read_write> sd_out: array<f32>;

var<workgroup> w4_i: array<vec4<f32>, 256>;
var<workgroup> w4_p: array<vec4<f32>, 256>;
var<workgroup> w4_t: array<vec4<f32>, 256>;
var<workgroup> w_bad: array<f32, 256>;

@compute @workgroup_size(256)
fn sdice_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let groups = (p.c + 3u) / 4u;
    let o = wid.y * nwg.x + wid.x;   // chunk * G + grp
    if (o >= p.chunks * groups) { return; }
    let grp = o % groups;
    let k = o / groups;
    let c0 = grp * 4u;
    let total = p.n * p.s;
    let e0 = k * p.chunk;
    let e1 = min(total, e0 + p.chunk);
    var si = vec4<f32>(0.0);
    var sp = vec4<f32>(0.0);
    var st = vec4<f32>(0.0);
    var bad = 0.0;
    for (var e = e0 + lid.x; e < e1; e = e + 256u) {
        let base = (e / p.s) * p.c * p.s + e % p.s;
        var m = sd_x[base];
        for (var c = 1u; c < p.c; c = c + 1u) { m = max(m, sd_x[base + c * p.s]); }
        var z = 0.0;
        for (var c = 0u; c < p.c; c = c + 1u) { z = z + exp(sd_x[base + c * p.s] - m); }
        let lab = sd_y[e];
        bad = bad + select(0.0, 1.0, lab >= p.c);
        for (var j = 0u; j < 4u; j = j + 1u) {
            let c = c0 + j;
            if (c < p.c) {
                let pv = exp(sd_x[base + c * p.s] - m) / z;
                let tv = select(0.0, 1.0, lab == c);
                si[j] = si[j] + pv * tv;
                sp[j] = sp[j] + powk(pv);
                st[j] = st[j] + tv;
            }
        }
    }
    w4_i[lid.x] = si; w4_p[lid.x] = sp; w4_t[lid.x] = st; w_bad[lid.x] = bad;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid.x < s) {
            w4_i[lid.x] = w4_i[lid.x] + w4_i[lid.x + s];
            w4_p[lid.x] = w4_p[lid.x] + w4_p[lid.x + s];
            w4_t[lid.x] = w4_t[lid.x] + w4_t[lid.x + s];
            w_bad[lid.x] = w_bad[lid.x] + w_bad[lid.x + s];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        let w = 3u * p.c + 1u;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let c = c0 + j;
            if (c < p.c) {
                sd_out[k * w + c * 3u] = w4_i[0][j];
                sd_out[k * w + c * 3u + 1u] = w4_p[0][j];
                sd_out[k * w + c * 3u + 2u] = w4_t[0][j];
            }
        }
        if (grp == 0u) { sd_out[k * w + 3u * p.c] = w_bad[0]; }
    }
}

// sdice_loss_fwd: the statistics in lf_stats (binding 1) with the out-of-range label count
// after them, the loss in lf_out (binding 2; NaN when a label was out of range).
@group(0) @binding(3) var<storage, read_write> sf_bad: array<f32>;

@compute @workgroup_size(1)
fn sdice_loss_fwd() {
    let bad = lf_stats[3u * p.c];
    lf_out[0] = select(dice_loss_of_stats(), bitcast<f32>(0x7fc00000u), bad > 0.0);
    sf_bad[0] = bad;
}

@group(0) @binding(1) var<storage, read> sdb_x: array<f32>;
@group(0) @binding(2) var<storage, read> sdb_y: array<u32>;
@group(0) @binding(4) var<storage, read> sdb_g: array<f32>;
@group(0) @binding(5) var<storage, read_write> sdb_gx: array<f32>;

// dL/dp_c of voxel (probability pv, label lab), as dice_bwd_labels writes it.
fn sdb_gp(c: u32, pv: f32, lab: u32, g: f32) -> f32 {
    let k = coef(c);
    let t = select(0.0, 1.0, lab == c);
    let dpk = select(1.0, 2.0 * pv, p.power == 2u);
    return g * (k.di * t + k.dp * dpk);
}

@compute @workgroup_size(256)
fn sdice_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n * p.s) { return; }
    let base = (i / p.s) * p.c * p.s + i % p.s;
    var m = sdb_x[base];
    for (var c = 1u; c < p.c; c = c + 1u) { m = max(m, sdb_x[base + c * p.s]); }
    var z = 0.0;
    for (var c = 0u; c < p.c; c = c + 1u) { z = z + exp(sdb_x[base + c * p.s] - m); }
    let lab = sdb_y[i];
    let g = sdb_g[0];
    var dot = 0.0;
    for (var c = 0u; c < p.c; c = c + 1u) {
        let pv = exp(sdb_x[base + c * p.s] - m) / z;
        dot = dot + sdb_gp(c, pv, lab, g) * pv;
    }
    for (var c = 0u; c < p.c; c = c + 1u) {
        let pv = exp(sdb_x[base + c * p.s] - m) / z;
        sdb_gx[base + c * p.s] = pv * (sdb_gp(c, pv, lab, g) - dot);
    }
}
