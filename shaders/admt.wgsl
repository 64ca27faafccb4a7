// AD-MT's per-voxel maps (ADMT.md §4 steps 2, 5, 7, 8) and its two batch-wide moves (CutMix,
// the EMA of a teacher). Probabilities and logits are [N, C, S] (element (n, c, s) at
// (n * C + c) * S + s); maps are [N, S]. One invocation per voxel (per element for cutmix and
// ema); no reduction, so no ordering question.
//
// teacher_fuse: the two teachers' softmaxes p1, p2 -> the fused label, its confidence and the
//   conflict map [argmax p1 != argmax p2]. mode 0: weights w1 = 1 / (1 + e^(H1 - H2)) with
//   H = -sum_c p_c log2(p_c + 1e-10) (the released code); mode 1: w1 = 1/2 (the earlier
//   variant). q = (w1 p1 + (1 - w1) p2)^(1/tau), renormalised; argmax takes the first of ties.
// student_max: the student's weak-view logits -> its label and confidence max softmax = 1/z.
// compromise_threshold: where the fused label differs from the student's, the teachers
//   disagree and the student is strictly more confident, take the student's label and
//   confidence; then IGNORE where the confidence is below the threshold.
// cutmix_f32 / cutmix_u32: element (n, c, v) takes sample perm[n]'s value inside n's box
//   (boxes[n * 7] = perm, then [lo, hi) per axis of (D0, D1, D2)), its own outside.
// ema: teacher <- alpha * teacher + (1 - alpha) * student.

const IGNORE: u32 = 0xffffffffu;

struct AdmtParams {
    n: u32,
    c: u32,
    s: u32,
    mode: u32,
    d0: u32,
    d1: u32,
    d2: u32,
    count: u32,
    inv_tau: f32,
    threshold: f32,
    alpha: f32,
    _p: f32,
}

@group(0) @binding(0) var<uniform> p: AdmtParams;

fn gid(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

@group(0) @binding(1) var<storage, read> tf_p1: array<f32>;
@group(0) @binding(2) var<storage, read> tf_p2: array<f32>;
@group(0) @binding(3) var<storage, read_write> tf_label: array<u32>;
@group(0) @binding(4) var<storage, read_write> tf_conf: array<f32>;
@group(0) @binding(5) var<storage, read_write> tf_conflict: array<u32>;

fn entropy1(base: u32) -> f32 {
    var h = 0.0;
    for (var c = 0u; c < p.c; c = c + 1u) {
        let q = tf_p1[base + c * p.s];
        h = h - q * log2(q + 1e-10);
    }
    return h;
}

fn entropy2(base: u32) -> f32 {
    var h = 0.0;
    for (var c = 0u; c < p.c; c = c + 1u) {
        let q = tf_p2[base + c * p.s];
        h = h - q * log2(q + 1e-10);
    }
    return h;
}

fn mixed(base: u32, c: u32, w1: f32) -> f32 {
    let q = w1 * tf_p1[base + c * p.s] + (1.0 - w1) * tf_p2[base + c * p.s];
    return select(pow(q, p.inv_tau), q, p.inv_tau == 1.0);
}

@compute @workgroup_size(256)
fn teacher_fuse(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n * p.s) { return; }
    let base = (i / p.s) * p.c * p.s + i % p.s;
    var a1 = 0u; var a2 = 0u;
    var m1 = tf_p1[base]; var m2 = tf_p2[base];
    for (var c = 1u; c < p.c; c = c + 1u) {
        let q1 = tf_p1[base + c * p.s];
        let q2 = tf_p2[base + c * p.s];
        if (q1 > m1) { m1 = q1; a1 = c; }
        if (q2 > m2) { m2 = q2; a2 = c; }
    }
    var w1 = 0.5;
    if (p.mode == 0u) { w1 = 1.0 / (1.0 + exp(entropy1(base) - entropy2(base))); }
    var z = 0.0;
    var best = mixed(base, 0u, w1);
    var arg = 0u;
    for (var c = 0u; c < p.c; c = c + 1u) {
        let q = mixed(base, c, w1);
        z = z + q;
        if (q > best) { best = q; arg = c; }
    }
    tf_label[i] = arg;
    tf_conf[i] = best / z;
    tf_conflict[i] = select(0u, 1u, a1 != a2);
}

@group(0) @binding(1) var<storage, read> sm_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> sm_label: array<u32>;
@group(0) @binding(3) var<storage, read_write> sm_conf: array<f32>;

@compute @workgroup_size(256)
fn student_max(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n * p.s) { return; }
    let base = (i / p.s) * p.c * p.s + i % p.s;
    var m = sm_x[base];
    var arg = 0u;
    for (var c = 1u; c < p.c; c = c + 1u) {
        let v = sm_x[base + c * p.s];
        if (v > m) { m = v; arg = c; }
    }
    var z = 0.0;
    for (var c = 0u; c < p.c; c = c + 1u) { z = z + exp(sm_x[base + c * p.s] - m); }
    sm_label[i] = arg;
    sm_conf[i] = 1.0 / z;
}

@group(0) @binding(1) var<storage, read> ct_label: array<u32>;
@group(0) @binding(2) var<storage, read> ct_conf: array<f32>;
@group(0) @binding(3) var<storage, read> ct_conflict: array<u32>;
@group(0) @binding(4) var<storage, read> ct_label_s: array<u32>;
@group(0) @binding(5) var<storage, read> ct_conf_s: array<f32>;
@group(0) @binding(6) var<storage, read_write> ct_target: array<u32>;

@compute @workgroup_size(256)
fn compromise_threshold(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n * p.s) { return; }
    var lab = ct_label[i];
    var conf = ct_conf[i];
    let ls = ct_label_s[i];
    if (lab != ls && ct_conflict[i] != 0u && ct_conf_s[i] > conf) {
        lab = ls;
        conf = ct_conf_s[i];
    }
    ct_target[i] = select(IGNORE, lab, conf >= p.threshold);
}

@group(0) @binding(1) var<storage, read> cm_box: array<u32>;

fn cutmix_source(i: u32) -> u32 {
    let per = p.c * p.s;
    let n = i / per;
    let v = i % p.s;
    let b = n * 7u;
    let x2 = v % p.d2;
    let x1 = (v / p.d2) % p.d1;
    let x0 = v / (p.d2 * p.d1);
    let inside = x0 >= cm_box[b + 1u] && x0 < cm_box[b + 2u]
        && x1 >= cm_box[b + 3u] && x1 < cm_box[b + 4u]
        && x2 >= cm_box[b + 5u] && x2 < cm_box[b + 6u];
    return select(i, cm_box[b] * per + i % per, inside);
}

@group(0) @binding(2) var<storage, read> cmf_in: array<f32>;
@group(0) @binding(3) var<storage, read_write> cmf_out: array<f32>;

@compute @workgroup_size(256)
fn cutmix_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n * p.c * p.s) { return; }
    cmf_out[i] = cmf_in[cutmix_source(i)];
}

@group(0) @binding(2) var<storage, read> cmu_in: array<u32>;
@group(0) @binding(3) var<storage, read_write> cmu_out: array<u32>;

@compute @workgroup_size(256)
fn cutmix_u32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n * p.c * p.s) { return; }
    cmu_out[i] = cmu_in[cutmix_source(i)];
}

@group(0) @binding(1) var<storage, read_write> em_t: array<f32>;
@group(0) @binding(2) var<storage, read> em_s: array<f32>;

@compute @workgroup_size(256)
fn ema(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.count) { return; }
    em_t[i] = p.alpha * em_t[i] + (1.0 - p.alpha) * em_s[i];
}
