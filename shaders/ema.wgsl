// The teachers' EMA over many tensors per dispatch (ADMT.md §4 step 11): for every slot k of
// a dispatch, t_k[i] <- alpha * t_k[i] + (1 - alpha) * s_k[i] for i < len(k), the same f32
// expression as admt.wgsl's per-tensor `ema`, so both give the same bits.
//
// Binding contract: binding 0 the uniform EmaGroupParams; then per slot k a pair, the
// teacher's range at binding 2k + 1 (read_write) and the student's at 2k + 2 (read). A slot
// is a whole tensor or, for a tensor over the storage-binding limit, one piece of it (the
// host binds the range). Three entry points bind 4, 8 or 16 pairs (8, 16 or 32 storage
// buffers); the host takes the widest the adapter's max_storage_buffers_per_shader_stage
// allows. Unused slots of a short dispatch: length 0, first workgroup 0xffffffff, bound to
// words of a scratch buffer (never touched).
//
// Index maths: a workgroup covers CHUNK = 4096 elements of one slot, each invocation 16 of
// them 256 apart (coalesced); slot k owns the workgroups first(k) .. first(k + 1) (first(0)
// = 0, each slot rounded up to whole workgroups, so a workgroup never straddles two tensors).
// A workgroup's slot is the number of slots after the first that start at or before it (four
// vector comparisons), so the switch on it is uniform over the workgroup: on a GPU one
// branch; a CPU driver that runs every case under a mask (lavapipe) pays the switch once per
// 16 elements, not per element. Workgroups past the last slot's elements (the 2-D fold of a
// large grid) do nothing. No reduction, no ordering question.

struct EmaGroupParams {
    alpha: f32,
    // used slots (informational: unused ones never match a workgroup)
    slots: u32,
    _p0: u32,
    _p1: u32,
    // first workgroup of slot k at first[k / 4][k % 4]; elements of slot k at len[k / 4][k % 4]
    first: array<vec4<u32>, 4>,
    len: array<vec4<u32>, 4>,
}

@group(0) @binding(0) var<uniform> p: EmaGroupParams;

@group(0) @binding(1) var<storage, read_write> t0: array<f32>;
@group(0) @binding(2) var<storage, read> s0: array<f32>;
@group(0) @binding(3) var<storage, read_write> t1: array<f32>;
@group(0) @binding(4) var<storage, read> s1: array<f32>;
@group(0) @binding(5) var<storage, read_write> t2: array<f32>;
@group(0) @binding(6) var<storage, read> s2: array<f32>;
@group(0) @binding(7) var<storage, read_write> t3: array<f32>;
@group(0) @binding(8) var<storage, read> s3: array<f32>;
@group(0) @binding(9) var<storage, read_write> t4: array<f32>;
@group(0) @binding(10) var<storage, read> s4: array<f32>;
@group(0) @binding(11) var<storage, read_write> t5: array<f32>;
@group(0) @binding(12) var<storage, read> s5: array<f32>;
@group(0) @binding(13) var<storage, read_write> t6: array<f32>;
@group(0) @binding(14) var<storage, read> s6: array<f32>;
@group(0) @binding(15) var<storage, read_write> t7: array<f32>;
@group(0) @binding(16) var<storage, read> s7: array<f32>;
@group(0) @binding(17) var<storage, read_write> t8: array<f32>;
@group(0) @binding(18) var<storage, read> s8: array<f32>;
@group(0) @binding(19) var<storage, read_write> t9: array<f32>;
@group(0) @binding(20) var<storage, read> s9: array<f32>;
@group(0) @binding(21) var<storage, read_write> t10: array<f32>;
@group(0) @binding(22) var<storage, read> s10: array<f32>;
@group(0) @binding(23) var<storage, read_write> t11: array<f32>;
@group(0) @binding(24) var<storage, read> s11: array<f32>;
@group(0) @binding(25) var<storage, read_write> t12: array<f32>;
@group(0) @binding(26) var<storage, read> s12: array<f32>;
@group(0) @binding(27) var<storage, read_write> t13: array<f32>;
@group(0) @binding(28) var<storage, read> s13: array<f32>;
@group(0) @binding(29) var<storage, read_write> t14: array<f32>;
@group(0) @binding(30) var<storage, read> s14: array<f32>;
@group(0) @binding(31) var<storage, read_write> t15: array<f32>;
@group(0) @binding(32) var<storage, read> s15: array<f32>;

// Elements per workgroup: 16 per invocation, 256 apart (ops::ema::CHUNK on the host).
const CHUNK: u32 = 4096u;

fn first_wg(k: u32) -> u32 {
    return p.first[k / 4u][k % 4u];
}

fn slot_len(k: u32) -> u32 {
    return p.len[k / 4u][k % 4u];
}

// The slot of workgroup `wg`: how many slots after the first start at or before it (unused
// slots start at 0xffffffff, never). Four vector comparisons, no loop: the same work at every
// width.
fn slot_of(wg: u32) -> u32 {
    let w = vec4<u32>(wg);
    let one = vec4<u32>(1u);
    let zero = vec4<u32>(0u);
    let c = select(zero, one, w >= p.first[0]) + select(zero, one, w >= p.first[1])
        + select(zero, one, w >= p.first[2]) + select(zero, one, w >= p.first[3]);
    return c.x + c.y + c.z + c.w - 1u;
}

fn blend(t: f32, s: f32) -> f32 {
    return p.alpha * t + (1.0 - p.alpha) * s;
}

@compute @workgroup_size(256)
fn ema_group4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let wg = wid.y * nwg.x + wid.x;
    let k = slot_of(wg);
    let i = (wg - first_wg(k)) * CHUNK + lid.x;
    let n = slot_len(k);
    switch k {
        case 0u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t0[j] = blend(t0[j], s0[j]); } }
        case 1u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t1[j] = blend(t1[j], s1[j]); } }
        case 2u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t2[j] = blend(t2[j], s2[j]); } }
        case 3u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t3[j] = blend(t3[j], s3[j]); } }
        default: {}
    }
}

@compute @workgroup_size(256)
fn ema_group8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let wg = wid.y * nwg.x + wid.x;
    let k = slot_of(wg);
    let i = (wg - first_wg(k)) * CHUNK + lid.x;
    let n = slot_len(k);
    switch k {
        case 0u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t0[j] = blend(t0[j], s0[j]); } }
        case 1u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t1[j] = blend(t1[j], s1[j]); } }
        case 2u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t2[j] = blend(t2[j], s2[j]); } }
        case 3u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t3[j] = blend(t3[j], s3[j]); } }
        case 4u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t4[j] = blend(t4[j], s4[j]); } }
        case 5u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t5[j] = blend(t5[j], s5[j]); } }
        case 6u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t6[j] = blend(t6[j], s6[j]); } }
        case 7u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t7[j] = blend(t7[j], s7[j]); } }
        default: {}
    }
}

@compute @workgroup_size(256)
fn ema_group16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let wg = wid.y * nwg.x + wid.x;
    let k = slot_of(wg);
    let i = (wg - first_wg(k)) * CHUNK + lid.x;
    let n = slot_len(k);
    switch k {
        case 0u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t0[j] = blend(t0[j], s0[j]); } }
        case 1u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t1[j] = blend(t1[j], s1[j]); } }
        case 2u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t2[j] = blend(t2[j], s2[j]); } }
        case 3u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t3[j] = blend(t3[j], s3[j]); } }
        case 4u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t4[j] = blend(t4[j], s4[j]); } }
        case 5u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t5[j] = blend(t5[j], s5[j]); } }
        case 6u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t6[j] = blend(t6[j], s6[j]); } }
        case 7u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t7[j] = blend(t7[j], s7[j]); } }
        case 8u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t8[j] = blend(t8[j], s8[j]); } }
        case 9u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t9[j] = blend(t9[j], s9[j]); } }
        case 10u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t10[j] = blend(t10[j], s10[j]); } }
        case 11u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t11[j] = blend(t11[j], s11[j]); } }
        case 12u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t12[j] = blend(t12[j], s12[j]); } }
        case 13u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t13[j] = blend(t13[j], s13[j]); } }
        case 14u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t14[j] = blend(t14[j], s14[j]); } }
        case 15u: { for (var j = i; j < min(n, i + CHUNK); j = j + 256u) { t15[j] = blend(t15[j], s15[j]); } }
        default: {}
    }
}
