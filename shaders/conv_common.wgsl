// Shared by the convolution modules (conv.wgsl: f32 GEMMs; conv_mma.wgsl: f16 matrix-unit
// GEMM): the geometry, its uniform params, the gathered source and the index decoders.
// Rust side: src/ops/conv.rs.
//
// Geometry. Every tensor is [N, C, X, Y, Z] row-major (2D convolutions are 3D ones with a
// unit X axis). The "source" is the tensor gathered into the A operand: x for the forward and
// the weight gradient, the output gradient g for the input gradient. The "m grid" is the
// voxel grid the GEMM rows walk over (output voxels for the forward and weight gradient,
// input voxels for the input gradient). A row m = n * mv + voxel has base coordinates
// b = voxel * stride - pad in the source; a reduction index k = c * kv + (dx, dy, dz) reads
// the source at b + d (forward) or b - d (`flip`: the input gradient of a stride-1
// convolution, a convolution with the flipped kernel), zero outside the source.

struct ConvParams {
    m: u32,          // GEMM rows (conv_gemm), reduction length (conv_wgrad), elements (direct)
    n: u32,          // GEMM columns
    k: u32,          // reduction length (conv_gemm)
    has_bias: u32,
    sc: u32,         // source channels
    sx: u32,         // source spatial dims
    sy: u32,
    sz: u32,
    sv: u32,         // source voxels per channel
    mx: u32,         // m grid dims
    my: u32,
    mz: u32,
    mv: u32,         // m grid voxels
    kx: u32,         // kernel dims
    ky: u32,
    kz: u32,
    kv: u32,         // kernel volume
    stx: u32,        // m grid -> source stride
    sty: u32,
    stz: u32,
    pdx: i32,        // m grid -> source offset (b = voxel * stride - pd)
    pdy: i32,
    pdz: i32,
    flip: u32,       // 1: read the source at b - d (input gradient, stride 1)
    wc: u32,
    wstride: u32,
    tiles_n: u32,    // column tiles
    tiles_total: u32,
    chunk: u32,      // conv_wgrad: rows per chunk; conv_gemm: K per split
    nchunks: u32,    // number of chunks / splits (>= 1)
    rows: u32,       // conv_wgrad: output rows (Co)
    tiles_r: u32,    // conv_wgrad: row tiles
}

@group(0) @binding(0) var<uniform> p: ConvParams;
// The gathered source of conv_gemm / conv_wgrad / conv_bwd_input_direct.
@group(0) @binding(1) var<storage, read> src: array<f32>;

// Coordinates that fail every range test (invalid rows / reduction indices).
const BIG: i32 = 0x20000000;
const INVALID: u32 = 0xffffffffu;

// Source base of row (n, voxel v of the m grid): (offset of b, b.x, b.y, b.z).
fn decode_m(nb: u32, v: u32) -> vec4<i32> {
    let myz = p.my * p.mz;
    let ox = v / myz;
    let r = v - ox * myz;
    let oy = r / p.mz;
    let oz = r - oy * p.mz;
    let bx = i32(ox * p.stx) - p.pdx;
    let by = i32(oy * p.sty) - p.pdy;
    let bz = i32(oz * p.stz) - p.pdz;
    let base = i32(nb * p.sc * p.sv) + (bx * i32(p.sy) + by) * i32(p.sz) + bz;
    return vec4<i32>(base, bx, by, bz);
}

fn invalid_m() -> vec4<i32> {
    return vec4<i32>(0, BIG, BIG, BIG);
}

// Reduction index k = c * kv + kernel offset: (source offset, signed dx, dy, dz).
fn decode_k(k: u32, kmax: u32) -> vec4<i32> {
    if (k >= kmax) {
        return vec4<i32>(0, BIG, BIG, BIG);
    }
    let c = k / p.kv;
    let r = k - c * p.kv;
    let kyz = p.ky * p.kz;
    let dx = r / kyz;
    let r2 = r - dx * kyz;
    let dy = r2 / p.kz;
    let dz = r2 - dy * p.kz;
    let sp = i32((dx * p.sy + dy) * p.sz + dz);
    let cb = i32(c * p.sv);
    if (p.flip == 0u) {
        return vec4<i32>(cb + sp, i32(dx), i32(dy), i32(dz));
    }
    return vec4<i32>(cb - sp, -i32(dx), -i32(dy), -i32(dz));
}

fn weight_off(k: u32) -> u32 {
    let c = k / p.kv;
    return c * p.wc + (k - c * p.kv);
}

// A[m, k]: the source at row base mb displaced by e, zero outside.
fn gather(mb: vec4<i32>, e: vec4<i32>) -> f32 {
    let cx = u32(mb.y + e.y);
    let cy = u32(mb.z + e.z);
    let cz = u32(mb.w + e.w);
    if (cx < p.sx && cy < p.sy && cz < p.sz) {
        return src[u32(mb.x + e.x)];
    }
    return 0.0;
}
