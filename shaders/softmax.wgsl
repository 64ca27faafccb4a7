// Softmax, its backward, and argmax over the channel axis of x viewed as [N, C, S]
// (S = product of the spatial dims). One invocation per (n, s) walks the C channels;
// element (n, c, s) sits at (n * C + c) * S + s. Grid: 1-D over N*S, folded into 2-D.

struct SmParams {
    n: u32,   // N
    c: u32,   // C
    s: u32,   // S
    n0: u32,  // first sample read (argmax_softmax; 0 elsewhere)
}

@group(0) @binding(0) var<uniform> p: SmParams;

fn gid(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// One probability from its logit, the channel maximum and the sum of exp(x - max): the one
// expression every softmax here (and the fused softmax + Dice in loss.wgsl) evaluates.
fn sm_prob(v: f32, m: f32, z: f32) -> f32 {
    return exp(v - m) / z;
}

@group(0) @binding(1) var<storage, read> sm_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> sm_y: array<f32>;

@compute @workgroup_size(256)
fn softmax_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n * p.s) { return; }
    let nn = i / p.s;
    let ss = i % p.s;
    let base = nn * p.c * p.s + ss;
    var m = sm_x[base];
    for (var c = 1u; c < p.c; c = c + 1u) {
        m = max(m, sm_x[base + c * p.s]);
    }
    var z = 0.0;
    for (var c = 0u; c < p.c; c = c + 1u) {
        z = z + exp(sm_x[base + c * p.s] - m);
    }
    for (var c = 0u; c < p.c; c = c + 1u) {
        sm_y[base + c * p.s] = sm_prob(sm_x[base + c * p.s], m, z);
    }
}

// gx = y * (g - sum_c g * y)
@group(0) @binding(1) var<storage, read> sb_y: array<f32>;
@group(0) @binding(2) var<storage, read> sb_g: array<f32>;
@group(0) @binding(3) var<storage, read_write> sb_gx: array<f32>;

@compute @workgroup_size(256)
fn softmax_bwd_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n * p.s) { return; }
    let nn = i / p.s;
    let ss = i % p.s;
    let base = nn * p.c * p.s + ss;
    var dot = 0.0;
    for (var c = 0u; c < p.c; c = c + 1u) {
        dot = dot + sb_g[base + c * p.s] * sb_y[base + c * p.s];
    }
    for (var c = 0u; c < p.c; c = c + 1u) {
        let k = base + c * p.s;
        sb_gx[k] = sb_y[k] * (sb_g[k] - dot);
    }
}

// argmax over channels (the first maximum wins), as u32 [N, S]
@group(0) @binding(1) var<storage, read> am_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> am_out: array<u32>;

@compute @workgroup_size(256)
fn argmax_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n * p.s) { return; }
    let nn = i / p.s;
    let ss = i % p.s;
    let base = nn * p.c * p.s + ss;
    var best = am_x[base];
    var arg = 0u;
    for (var c = 1u; c < p.c; c = c + 1u) {
        let v = am_x[base + c * p.s];
        if (v > best) {
            best = v;
            arg = c;
        }
    }
    am_out[i] = arg;
}

// argmax over channels of softmax(x) for samples n0 .. n0 + N (N = p.n), as u32 [N, S],
// without writing the probabilities: the same values softmax_fwd writes, compared as
// argmax_fwd compares them (first maximum wins; NaN probabilities never win), so the result
// equals argmax_fwd(softmax_fwd(x)) bit for bit, ties from rounded probabilities included.
@group(0) @binding(1) var<storage, read> as_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> as_out: array<u32>;

@compute @workgroup_size(256)
fn argmax_softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.n * p.s) { return; }
    let nn = p.n0 + i / p.s;
    let ss = i % p.s;
    let base = nn * p.c * p.s + ss;
    var m = as_x[base];
    for (var c = 1u; c < p.c; c = c + 1u) {
        m = max(m, as_x[base + c * p.s]);
    }
    var z = 0.0;
    for (var c = 0u; c < p.c; c = c + 1u) {
        z = z + exp(as_x[base + c * p.s] - m);
    }
    var best = sm_prob(as_x[base], m, z);
    var arg = 0u;
    for (var c = 1u; c < p.c; c = c + 1u) {
        let v = sm_prob(as_x[base + c * p.s], m, z);
        if (v > best) {
            best = v;
            arg = c;
        }
    }
    as_out[i] = arg;
}
