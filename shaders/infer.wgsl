// Sliding-window inference (src/infer/window.rs): cut zero-padded patches out of a volume,
// accumulate weighted class probabilities and weights over overlapping patches, divide and
// crop the padding back. Volumes are row-major [X, Y, Z] (z fastest) as SS-Net's LA arrays;
// the accumulators live in padded coordinates [PX, PY, PZ]. One invocation per voxel; each
// dispatch touches one patch, so overlapping patches are summed in dispatch order (no
// atomics, the same order on every run). Grid: 1-D, folded into 2-D.

struct InferParams {
    vol: vec4<u32>,    // padded dims PX, PY, PZ; C (classes)
    pat: vec4<u32>,    // patch dims px, py, pz; slot b of the patch in its batch
    start: vec4<u32>,  // patch start in padded coordinates xs, ys, zs; n (invocations)
    pad: vec4<u32>,    // zeros added before each axis; unused
    orig: vec4<u32>,   // unpadded dims X, Y, Z; unused
}

@group(0) @binding(0) var<uniform> p: InferParams;

fn gid(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// Patch voxel index -> (i, j, k) within the patch.
fn patch_ijk(v: u32) -> vec3<u32> {
    let k = v % p.pat.z;
    let j = (v / p.pat.z) % p.pat.y;
    let i = v / (p.pat.z * p.pat.y);
    return vec3<u32>(i, j, k);
}

// out[b, 0, i, j, k] = padded(image)[xs + i, ys + j, zs + k] (zero outside the image).
@group(0) @binding(1) var<storage, read> gp_image: array<f32>;
@group(0) @binding(2) var<storage, read_write> gp_out: array<f32>;

@compute @workgroup_size(256)
fn gather_patch(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let v = gid(wid, nwg, lid);
    if (v >= p.start.w) { return; }
    let ijk = patch_ijk(v);
    // Padded coordinates, then back to the image's (wrapping below zero = outside).
    let x = p.start.x + ijk.x - p.pad.x;
    let y = p.start.y + ijk.y - p.pad.y;
    let z = p.start.z + ijk.z - p.pad.z;
    let inside = (p.start.x + ijk.x >= p.pad.x) && (p.start.y + ijk.y >= p.pad.y) && (p.start.z + ijk.z >= p.pad.z)
        && x < p.orig.x && y < p.orig.y && z < p.orig.z;
    var val = 0.0;
    if (inside) {
        val = gp_image[(x * p.orig.y + y) * p.orig.z + z];
    }
    gp_out[p.pat.w * p.start.w + v] = val;
}

// score[c, xs + i, ys + j, zs + k] += w[i, j, k] * probs[b, c, i, j, k];  cnt[...] += w[i, j, k]
@group(0) @binding(1) var<storage, read> ac_probs: array<f32>;
@group(0) @binding(2) var<storage, read> ac_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> ac_score: array<f32>;
@group(0) @binding(4) var<storage, read_write> ac_cnt: array<f32>;

@compute @workgroup_size(256)
fn accumulate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let v = gid(wid, nwg, lid);
    let pv = p.start.w;
    if (v >= pv) { return; }
    let ijk = patch_ijk(v);
    let dst = ((p.start.x + ijk.x) * p.vol.y + (p.start.y + ijk.y)) * p.vol.z + (p.start.z + ijk.z);
    let nvox = p.vol.x * p.vol.y * p.vol.z;
    let w = ac_w[v];
    for (var c = 0u; c < p.vol.w; c = c + 1u) {
        let src = (p.pat.w * p.vol.w + c) * pv + v;
        ac_score[c * nvox + dst] = ac_score[c * nvox + dst] + w * ac_probs[src];
    }
    ac_cnt[dst] = ac_cnt[dst] + w;
}

// probs[c, x, y, z] = score[c, x + pad] / cnt[x + pad] over the unpadded volume; labels: with
// two classes p1 > 0.5 (SS-Net's rule), otherwise the first class of highest probability.
@group(0) @binding(1) var<storage, read> fi_score: array<f32>;
@group(0) @binding(2) var<storage, read> fi_cnt: array<f32>;
@group(0) @binding(3) var<storage, read_write> fi_probs: array<f32>;
@group(0) @binding(4) var<storage, read_write> fi_labels: array<u32>;

@compute @workgroup_size(256)
fn finalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let v = gid(wid, nwg, lid);
    let n = p.orig.x * p.orig.y * p.orig.z;
    if (v >= n) { return; }
    let z = v % p.orig.z;
    let y = (v / p.orig.z) % p.orig.y;
    let x = v / (p.orig.z * p.orig.y);
    let src = ((x + p.pad.x) * p.vol.y + (y + p.pad.y)) * p.vol.z + (z + p.pad.z);
    let nvox = p.vol.x * p.vol.y * p.vol.z;
    let cnt = fi_cnt[src];
    var best = 0.0;
    var arg = 0u;
    for (var c = 0u; c < p.vol.w; c = c + 1u) {
        let q = fi_score[c * nvox + src] / cnt;
        fi_probs[c * n + v] = q;
        if (c == 0u || q > best) {
            best = q;
            arg = c;
        }
    }
    if (p.vol.w == 2u) {
        arg = select(0u, 1u, fi_score[nvox + src] / cnt > 0.5);
    }
    fi_labels[v] = arg;
}
