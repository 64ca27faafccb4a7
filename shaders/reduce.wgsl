// Deterministic sums over the middle axis of x viewed as [A, R, B] (row-major).
//
// No float atomics: every output is produced by exactly one invocation or one workgroup,
// in a fixed order, so the same input gives the same bits on the same adapter.
//
// reduce_wg: one 256-wide workgroup per output element o of [A, K, B] (K chunks of R, each
//   `chunk` long); thread t adds r = k*chunk + t, + 256, ... then a fixed tree in
//   workgroup memory. Workgroup id o = wid.y * nwg.x + wid.x (grid folded into 2-D).
// reduce_small: one invocation per output element of [A, B]; a sequential loop over R.
// broadcast_mid: out[a, r, b] = alpha * g[a, b] (the backward of a sum over R).

struct RedParams {
    a: u32,
    r: u32,
    b: u32,
    k: u32,
    chunk: u32,
    _pad0: u32,
    alpha: f32,
    _pad1: f32,
}

@group(0) @binding(0) var<uniform> p: RedParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn reduce_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = wid.y * nwg.x + wid.x;
    let total = p.a * p.k * p.b;
    if (o >= total) { return; } // uniform across the workgroup
    let b = o % p.b;
    let ak = o / p.b;
    let kk = ak % p.k;
    let a = ak / p.k;
    let r0 = kk * p.chunk;
    let r1 = min(p.r, r0 + p.chunk);
    var acc = 0.0;
    for (var r = r0 + lid.x; r < r1; r = r + 256u) {
        acc = acc + x[(a * p.r + r) * p.b + b];
    }
    partial[lid.x] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid.x < s) {
            partial[lid.x] = partial[lid.x] + partial[lid.x + s];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        out[o] = partial[0] * p.alpha;
    }
}

@compute @workgroup_size(256)
fn reduce_small(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (o >= p.a * p.b) { return; }
    let b = o % p.b;
    let a = o / p.b;
    var acc = 0.0;
    for (var r = 0u; r < p.r; r = r + 1u) {
        acc = acc + x[(a * p.r + r) * p.b + b];
    }
    out[o] = acc * p.alpha;
}

@compute @workgroup_size(256)
fn broadcast_mid(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.a * p.r * p.b) { return; }
    let b = i % p.b;
    let a = i / (p.r * p.b);
    out[i] = x[a * p.b + b] * p.alpha;
}
