// Transposed convolution with kernel == stride (VNet's 2x2x2/2 upsampling) as one GEMM plus
// a voxel shuffle in the epilogue. Rust side: src/ops/conv.rs.
//
// x [N, Ci, X, Y, Z], w [Ci, Co, kx, ky, kz], y [N, Co, kx*X, ky*Y, kz*Z]:
//   y[n, co, kx*ix + dx, ...] = sum_ci x[n, ci, ix, ...] * w[ci, co, dx, ...] + b[co].
// Kernel == stride means every output voxel gets exactly one (ix, dx) pair: the eight (for
// 2x2x2) kernel offsets are independent 1x1x1 products, i.e. the GEMM
//   C[m, j] = sum_ci A[m, ci] * B[ci, j],  m = n * XV + voxel, j = co * kv + kernel offset,
//   A[m, ci] = x[(n * Ci + ci) * XV + voxel],  B[ci, j] = w[ci * Co * kv + j],
// whose element (m, j) is written, once, to its shuffled place in y.
// The same kernel computes the input gradient of a kernel == stride convolution (w [Co, Ci,
// k...] is then the "[in, out, k...]" weight).
//
// Tiles: BM x BN outputs per 256-invocation workgroup (4x4 per invocation), K staged BK at a
// time through workgroup memory with a register prefetch of the next stage. Grid folded into
// 2-D: workgroup id = wid.y * nwg.x + wid.x, bound-checked against tiles_total.

struct CtParams {
    m: u32,          // N * XV
    n: u32,          // Co * kv (GEMM columns)
    k: u32,          // Ci
    has_bias: u32,
    xv: u32,         // input voxels per channel
    xx: u32,         // input spatial dims
    xy: u32,
    xz: u32,
    kx: u32,         // kernel (= stride) dims
    ky: u32,
    kz: u32,
    kv: u32,
    co: u32,
    oy: u32,         // output dims (ox = kx * xx is not needed)
    oz: u32,
    ov: u32,
    tiles_n: u32,
    tiles_total: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: CtParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

override BM: u32 = 64u;   // rows per tile (a power of two, <= 256)
override BN: u32 = 64u;   // columns per tile (BM * BN == 4096)
override BK: u32 = 16u;   // reduction step

const WG: u32 = 256u;

var<workgroup> As: array<vec4<f32>, BK * BM / 4u>;  // [BK][BM]
var<workgroup> Bs: array<vec4<f32>, BK * BN / 4u>;  // [BK][BN]

@compute @workgroup_size(256)
fn ct_gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let tile = wid.y * nwg.x + wid.x;
    if (tile >= p.tiles_total) {
        return;
    }
    let m0 = (tile / p.tiles_n) * BM;
    let n0 = (tile % p.tiles_n) * BN;

    // A loads: row am (fixed), input channels ak + astep * i.
    let am = t % BM;
    let ak = t / BM;
    let astep = WG / BM;
    let la = (BK * BM + WG - 1u) / WG;
    let arow = m0 + am;
    let avalid = arow < p.m;
    let anb = arow / p.xv;
    let abase = anb * p.k * p.xv + (arow - anb * p.xv);
    // B loads: column bn (fixed; consecutive invocations read consecutive weights),
    // input channels bk + bstep * i.
    let bn = t % BN;
    let bk = t / BN;
    let bstep = WG / BN;
    let lb = (BK * BN + WG - 1u) / WG;
    let bvalid = n0 + bn < p.n;
    let steps = (p.k + BK - 1u) / BK;
    let tm = t % (BM / 4u);
    let tn = t / (BM / 4u);

    var ra: array<f32, 8>;
    var rb: array<f32, 8>;
    for (var i = 0u; i < la; i = i + 1u) {
        let kk = ak + astep * i;
        var v = 0.0;
        if (kk < BK && kk < p.k && avalid) {
            v = x[abase + kk * p.xv];
        }
        ra[i] = v;
    }
    for (var i = 0u; i < lb; i = i + 1u) {
        let kk = bk + bstep * i;
        var v = 0.0;
        if (kk < BK && kk < p.k && bvalid) {
            v = w[kk * p.n + n0 + bn];
        }
        rb[i] = v;
    }

    var acc: array<vec4<f32>, 4>;
    for (var s = 0u; s < steps; s = s + 1u) {
        for (var i = 0u; i < la; i = i + 1u) {
            let kk = ak + astep * i;
            if (kk < BK) {
                let e = kk * BM + am;
                As[e / 4u][e % 4u] = ra[i];
            }
        }
        for (var i = 0u; i < lb; i = i + 1u) {
            let kk = bk + bstep * i;
            if (kk < BK) {
                let e = kk * BN + bn;
                Bs[e / 4u][e % 4u] = rb[i];
            }
        }
        workgroupBarrier();
        if (s + 1u < steps) {
            let k0 = (s + 1u) * BK;
            for (var i = 0u; i < la; i = i + 1u) {
                let kk = ak + astep * i;
                var v = 0.0;
                if (kk < BK && k0 + kk < p.k && avalid) {
                    v = x[abase + (k0 + kk) * p.xv];
                }
                ra[i] = v;
            }
            for (var i = 0u; i < lb; i = i + 1u) {
                let kk = bk + bstep * i;
                var v = 0.0;
                if (kk < BK && k0 + kk < p.k && bvalid) {
                    v = w[(k0 + kk) * p.n + n0 + bn];
                }
                rb[i] = v;
            }
        }
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            let a = As[(kk * BM) / 4u + tm];
            let b = Bs[(kk * BN) / 4u + tn];
            acc[0] = fma(vec4<f32>(a.x), b, acc[0]);
            acc[1] = fma(vec4<f32>(a.y), b, acc[1]);
            acc[2] = fma(vec4<f32>(a.z), b, acc[2]);
            acc[3] = fma(vec4<f32>(a.w), b, acc[3]);
        }
        workgroupBarrier();
    }

    // Epilogue: the voxel shuffle. Row part: (n, ix, iy, iz) -> n*Co*OV + scaled voxel;
    // column part: (co, dx, dy, dz) -> co*OV + kernel offset.
    let row0 = m0 + tm * 4u;
    let col0 = n0 + tn * 4u;
    var coff: array<u32, 4>;
    var cb: array<f32, 4>;
    let kyz = p.ky * p.kz;
    for (var i = 0u; i < 4u; i = i + 1u) {
        let c = min(col0 + i, p.n - 1u);
        let co = c / p.kv;
        let r = c - co * p.kv;
        let dx = r / kyz;
        let r2 = r - dx * kyz;
        let dy = r2 / p.kz;
        let dz = r2 - dy * p.kz;
        coff[i] = co * p.ov + (dx * p.oy + dy) * p.oz + dz;
        var bv = 0.0;
        if (p.has_bias != 0u) {
            bv = bias[co];
        }
        cb[i] = bv;
    }
    let xyz = p.xy * p.xz;
    for (var j = 0u; j < 4u; j = j + 1u) {
        let m = row0 + j;
        if (m < p.m) {
            let nb = m / p.xv;
            let v = m - nb * p.xv;
            let ix = v / xyz;
            let r = v - ix * xyz;
            let iy = r / p.xz;
            let iz = r - iy * p.xz;
            let roff = nb * p.co * p.ov + ((ix * p.kx) * p.oy + iy * p.ky) * p.oz + iz * p.kz;
            for (var i = 0u; i < 4u; i = i + 1u) {
                if (col0 + i < p.n) {
                    y[roff + coff[i]] = acc[j][i] + cb[i];
                }
            }
        }
    }
}
