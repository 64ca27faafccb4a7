// Resampling: 2-D max pooling (kernel = stride = k), bilinear x2 upsampling with
// align_corners = True, and channel concatenation / slicing, forward and backward.
//
// Binding contract: @binding(0) params (uniform RsParams), then the storage buffers in the
// order src/ops/resample.rs passes them. Grid: 1-D, folded into 2-D; linear index
// (wid.y * nwg.x + wid.x) * 256 + lid.x, bound-checked against `total`.
// Every output element is written by exactly one invocation: the backwards are gathers.
//
// Max pool: x [N, C, H, W] -> y [N, C, HO, WO], HO = H / k, WO = W / k (floor). idx holds the
// argmax's offset inside its window (dy * k + dx), scanned row-major, first maximum on ties
// (a NaN wins, as PyTorch). Backward: gx[iy, ix] = g[iy / k, ix / k] where the window's
// argmax is this element, else 0 (also 0 in the rows / columns the floor cut off).
//
// Bilinear x2, align_corners: output row oy reads source position oy * (H - 1) / (HO - 1),
// computed exactly in integers: y0 = floor(oy (H-1) / (HO-1)), lambda = remainder / (HO-1),
// y1 = y0 + 1 unless y0 is the last row (then y1 = y0). Same for columns.
// out = (1-ly) ((1-lx) x[y0,x0] + lx x[y0,x1]) + ly ((1-lx) x[y1,x0] + lx x[y1,x1]).
// Backward gather: the output rows that read input row iy lie in [2 iy - 2, 2 iy + 2]
// (the source position oy (H-1)/(2H-1) is in (oy/2 - 1/2, oy/2]); each candidate row's weight
// for iy is (1-ly)[y0 == iy] + ly[y1 == iy], and the gradient is the separable double sum.
//
// Concat / slice along axis 1 of [N, C, S]: copies of 32-bit words (f32 or u32 alike).
// concat_copy: src [N, CI, S] into dst [N, CT, S] at channel offset COFF.
// slice_copy: dst [N, CI, S] from src [N, CT, S] at channel offset COFF.

struct RsParams {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    k: u32,
    total: u32,
    ci: u32,
    ct: u32,
    coff: u32,
    s: u32,
}

@group(0) @binding(0) var<uniform> p: RsParams;

fn gid(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// ---- max pool forward
@group(0) @binding(1) var<storage, read> mp_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> mp_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> mp_idx: array<u32>;

@compute @workgroup_size(256)
fn max_pool_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = gid(wid, nwg, lid);
    if (o >= p.total) { return; }
    let ox = o % p.wo;
    let oy = (o / p.wo) % p.ho;
    let nc = o / (p.wo * p.ho);
    let base = (nc * p.h + oy * p.k) * p.w + ox * p.k;
    var best = mp_x[base];
    var bi = 0u;
    for (var dy = 0u; dy < p.k; dy = dy + 1u) {
        for (var dx = 0u; dx < p.k; dx = dx + 1u) {
            let v = mp_x[base + dy * p.w + dx];
            if (v > best || v != v) {
                best = v;
                bi = dy * p.k + dx;
            }
        }
    }
    mp_y[o] = best;
    mp_idx[o] = bi;
}

// ---- max pool backward (gather per input element)
@group(0) @binding(1) var<storage, read> mb_g: array<f32>;
@group(0) @binding(2) var<storage, read> mb_idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> mb_gx: array<f32>;

@compute @workgroup_size(256)
fn max_pool_bwd_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.total) { return; }
    let ix = i % p.w;
    let iy = (i / p.w) % p.h;
    let nc = i / (p.w * p.h);
    let oy = iy / p.k;
    let ox = ix / p.k;
    var v = 0.0;
    if (oy < p.ho && ox < p.wo) {
        let o = (nc * p.ho + oy) * p.wo + ox;
        if (mb_idx[o] == (iy - oy * p.k) * p.k + (ix - ox * p.k)) {
            v = mb_g[o];
        }
    }
    mb_gx[i] = v;
}

// Source row / column of output position o along an axis of `n_in` inputs and `n_out`
// outputs (align_corners): (i0, i1, lambda).
struct Src {
    i0: u32,
    i1: u32,
    l: f32,
}

fn src(o: u32, n_in: u32, n_out: u32) -> Src {
    var r: Src;
    if (n_out <= 1u || n_in <= 1u) {
        r.i0 = 0u;
        r.l = 0.0;
    } else {
        let num = o * (n_in - 1u);
        let den = n_out - 1u;
        r.i0 = num / den;
        r.l = f32(num - r.i0 * den) / f32(den);
    }
    r.i1 = select(r.i0, r.i0 + 1u, r.i0 + 1u < n_in);
    return r;
}

// Weight of input index i in output position o's interpolation.
fn weight(o: u32, i: u32, n_in: u32, n_out: u32) -> f32 {
    let s = src(o, n_in, n_out);
    return select(0.0, 1.0 - s.l, s.i0 == i) + select(0.0, s.l, s.i1 == i);
}

// ---- bilinear x2 forward
@group(0) @binding(1) var<storage, read> up_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> up_y: array<f32>;

@compute @workgroup_size(256)
fn upsample_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = gid(wid, nwg, lid);
    if (o >= p.total) { return; }
    let ox = o % p.wo;
    let oy = (o / p.wo) % p.ho;
    let nc = o / (p.wo * p.ho);
    let sy = src(oy, p.h, p.ho);
    let sx = src(ox, p.w, p.wo);
    let r0 = (nc * p.h + sy.i0) * p.w;
    let r1 = (nc * p.h + sy.i1) * p.w;
    let top = (1.0 - sx.l) * up_x[r0 + sx.i0] + sx.l * up_x[r0 + sx.i1];
    let bot = (1.0 - sx.l) * up_x[r1 + sx.i0] + sx.l * up_x[r1 + sx.i1];
    up_y[o] = (1.0 - sy.l) * top + sy.l * bot;
}

// ---- bilinear x2 backward (gather per input element)
@group(0) @binding(1) var<storage, read> ub_g: array<f32>;
@group(0) @binding(2) var<storage, read_write> ub_gx: array<f32>;

@compute @workgroup_size(256)
fn upsample_bwd_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.total) { return; }
    let ix = i % p.w;
    let iy = (i / p.w) % p.h;
    let nc = i / (p.w * p.h);
    let oy0 = select(0u, 2u * iy - 2u, iy >= 1u);
    let oy1 = min(p.ho - 1u, 2u * iy + 2u);
    let ox0 = select(0u, 2u * ix - 2u, ix >= 1u);
    let ox1 = min(p.wo - 1u, 2u * ix + 2u);
    var acc = 0.0;
    for (var oy = oy0; oy <= oy1; oy = oy + 1u) {
        let wy = weight(oy, iy, p.h, p.ho);
        let row = (nc * p.ho + oy) * p.wo;
        var racc = 0.0;
        for (var ox = ox0; ox <= ox1; ox = ox + 1u) {
            racc = racc + weight(ox, ix, p.w, p.wo) * ub_g[row + ox];
        }
        acc = acc + wy * racc;
    }
    ub_gx[i] = acc;
}

// ---- concat: copy src [N, CI, S] into dst [N, CT, S] at channel COFF (total = N*CI*S)
@group(0) @binding(1) var<storage, read> cc_src: array<u32>;
@group(0) @binding(2) var<storage, read_write> cc_dst: array<u32>;

@compute @workgroup_size(256)
fn concat_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.total) { return; }
    let per = p.ci * p.s;
    let n = i / per;
    cc_dst[(n * p.ct + p.coff) * p.s + (i - n * per)] = cc_src[i];
}

// ---- slice: dst [N, CI, S] = src [N, CT, S] channels COFF .. COFF + CI (total = N*CI*S)
@compute @workgroup_size(256)
fn slice_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid(wid, nwg, lid);
    if (i >= p.total) { return; }
    let per = p.ci * p.s;
    let n = i / per;
    cc_dst[i] = cc_src[(n * p.ct + p.coff) * p.s + (i - n * per)];
}
