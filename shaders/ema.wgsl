// The teachers' EMA over many tensors per dispatch (ADMT.md §4 step 11): for every slot k of
// a dispatch, t_k[i] <- alpha * t_k[i] + (1 - alpha) * s_k[i] for i < len(k), the same f32
// expression as admt.wgsl's per-tensor `ema`, so both give the same bits.
//
// Binding contract: binding 0 the uniform EmaGroupParams; then per slot k a pair, the
// teacher's range at binding 2k + 1 (read_write) and the student's at 2k + 2 (read). A slot
// is a whole tensor or, for a tensor over the storage-binding limit, one piece of it (the
// host binds the range). Three entry points bind 4, 8 or 16 pairs (8, 16 or 32 storage
// buffers); the host takes the largest the adapter's max_storage_buffers_per_shader_stage
// allows and binds the first pair again in unused slots (length 0, never touched).
//
// Index maths: slot k owns the workgroups first(k) .. first(k + 1) (first(0) = 0, each slot
// rounded up to whole workgroups, so a workgroup never straddles two tensors); a workgroup
// finds its slot by scanning the `slots` used entries of `first`, and its invocation touches
// element (wg - first(k)) * 256 + lid of that slot. Workgroups past the last slot's elements
// (the 2-D fold of a large grid) return. No reduction, no ordering question.

struct EmaGroupParams {
    alpha: f32,
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

fn first_wg(k: u32) -> u32 {
    return p.first[k / 4u][k % 4u];
}

fn slot_len(k: u32) -> u32 {
    return p.len[k / 4u][k % 4u];
}

// The slot of workgroup `wg` among the first `n` slots (the last whose first workgroup is at
// or before it).
fn slot_of(wg: u32, n: u32) -> u32 {
    var k = 0u;
    for (var j = 1u; j < min(p.slots, n); j = j + 1u) {
        if (wg >= first_wg(j)) { k = j; }
    }
    return k;
}

fn blend(t: f32, s: f32) -> f32 {
    return p.alpha * t + (1.0 - p.alpha) * s;
}

@compute @workgroup_size(256)
fn ema_group4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let wg = wid.y * nwg.x + wid.x;
    let k = slot_of(wg, 4u);
    let i = (wg - first_wg(k)) * 256u + lid.x;
    if (i >= slot_len(k)) { return; }
    switch k {
        case 0u: { t0[i] = blend(t0[i], s0[i]); }
        case 1u: { t1[i] = blend(t1[i], s1[i]); }
        case 2u: { t2[i] = blend(t2[i], s2[i]); }
        case 3u: { t3[i] = blend(t3[i], s3[i]); }
        default: {}
    }
}

@compute @workgroup_size(256)
fn ema_group8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let wg = wid.y * nwg.x + wid.x;
    let k = slot_of(wg, 8u);
    let i = (wg - first_wg(k)) * 256u + lid.x;
    if (i >= slot_len(k)) { return; }
    switch k {
        case 0u: { t0[i] = blend(t0[i], s0[i]); }
        case 1u: { t1[i] = blend(t1[i], s1[i]); }
        case 2u: { t2[i] = blend(t2[i], s2[i]); }
        case 3u: { t3[i] = blend(t3[i], s3[i]); }
        case 4u: { t4[i] = blend(t4[i], s4[i]); }
        case 5u: { t5[i] = blend(t5[i], s5[i]); }
        case 6u: { t6[i] = blend(t6[i], s6[i]); }
        case 7u: { t7[i] = blend(t7[i], s7[i]); }
        default: {}
    }
}

@compute @workgroup_size(256)
fn ema_group16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let wg = wid.y * nwg.x + wid.x;
    let k = slot_of(wg, 16u);
    let i = (wg - first_wg(k)) * 256u + lid.x;
    if (i >= slot_len(k)) { return; }
    switch k {
        case 0u: { t0[i] = blend(t0[i], s0[i]); }
        case 1u: { t1[i] = blend(t1[i], s1[i]); }
        case 2u: { t2[i] = blend(t2[i], s2[i]); }
        case 3u: { t3[i] = blend(t3[i], s3[i]); }
        case 4u: { t4[i] = blend(t4[i], s4[i]); }
        case 5u: { t5[i] = blend(t5[i], s5[i]); }
        case 6u: { t6[i] = blend(t6[i], s6[i]); }
        case 7u: { t7[i] = blend(t7[i], s7[i]); }
        case 8u: { t8[i] = blend(t8[i], s8[i]); }
        case 9u: { t9[i] = blend(t9[i], s9[i]); }
        case 10u: { t10[i] = blend(t10[i], s10[i]); }
        case 11u: { t11[i] = blend(t11[i], s11[i]); }
        case 12u: { t12[i] = blend(t12[i], s12[i]); }
        case 13u: { t13[i] = blend(t13[i], s13[i]); }
        case 14u: { t14[i] = blend(t14[i], s14[i]); }
        case 15u: { t15[i] = blend(t15[i], s15[i]); }
        default: {}
    }
}
