// C[z, m, n] = sum over k in chunk z of A(m, k) * B(k, n), with A and B read through
// arbitrary strides: A(m, k) = a[m * sam + k * sak], B(k, n) = b[k * sbk + n * sbn].
// One call covers x·Wᵀ, g·W and gᵀ·x (the three products of a linear layer).
//
// Tiling: a 64×64 tile of C per 256-invocation workgroup (16×16 threads, 4×4 outputs each),
// K staged 16 at a time through workgroup memory. Grid: (ceil(N/64), ceil(M/64), Z) where
// Z splits K into chunks of `kc` (split-K; the caller sums the Z partials in a fixed order).
// Every C element is written by exactly one invocation: deterministic.
//
// matmul_fused (the only entry point: with PRO = BIAS = 0 it is the plain product) adds a
// prologue and an epilogue, selected by override constants (the driver compiles each
// combination without the others' branches):
//   PRO = 1: A(m, k) is read as act(gamma_k (A(m, k) - mean_k) invstd_k + beta_k), BatchNorm
//            (+ activation) over the K columns of A: a Linear after BatchNorm1d, whose
//            normalised input never reaches memory;
//   PRO = 2: the same on B(k, n) over its N columns (that Linear's weight gradient gᵀ·act).
//   BIAS = 1: C(m, n) += bias[n] on the way out (a Linear's bias; single-chunk only).
// The normalisation is bn_apply's expression (batchnorm.wgsl), the bias bias_fwd's, so the
// values are those of the unfused ops. Padding outside the matrices stays 0.

struct MmParams {
    m: u32,
    n: u32,
    k: u32,
    kc: u32,   // K per chunk z
    sam: u32,
    sak: u32,
    sbk: u32,
    sbn: u32,
    act: u32,    // matmul_fused prologue: 0 = none, 1 = leaky relu with `slope` (relu: 0)
    slope: f32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: MmParams;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> as_: array<array<f32, 64>, 16>; // [k][m]
var<workgroup> bs_: array<array<f32, 64>, 16>; // [k][n]

override PRO: u32 = 0u;
override BIAS: u32 = 0u;

@group(0) @binding(1) var<storage, read> fa: array<f32>;
@group(0) @binding(2) var<storage, read> fb: array<f32>;
@group(0) @binding(3) var<storage, read_write> fc: array<f32>;
@group(0) @binding(4) var<storage, read> f_stats: array<f32>;   // [2, channels]: mean; invstd
@group(0) @binding(5) var<storage, read> f_gamma: array<f32>;
@group(0) @binding(6) var<storage, read> f_beta: array<f32>;
@group(0) @binding(7) var<storage, read> f_bias: array<f32>;

// bn_apply's normalise, affine and activation of value v in channel ch of nc channels.
fn f_bn_act(v: f32, ch: u32, nc: u32) -> f32 {
    let xh = (v - f_stats[ch]) * f_stats[nc + ch];
    let z = f_gamma[ch] * xh + f_beta[ch];
    return select(z * p.slope, z, z > 0.0 || p.act == 0u);
}

@compute @workgroup_size(16, 16)
fn matmul_fused(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m0 = wid.y * TM;
    let n0 = wid.x * TN;
    let z = wid.z;
    let k_begin = z * p.kc;
    let k_end = min(p.k, k_begin + p.kc);
    let t = lid.y * 16u + lid.x;
    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) {
        for (var j = 0u; j < 4u; j = j + 1u) {
            acc[i][j] = 0.0;
        }
    }
    for (var k0 = k_begin; k0 < k_end; k0 = k0 + TK) {
        for (var l = 0u; l < 4u; l = l + 1u) {
            let e = t + l * 256u;
            let kk = e / 64u;
            let mm = e % 64u;
            let gk = k0 + kk;
            let gm = m0 + mm;
            var va = 0.0;
            if (gk < k_end && gm < p.m) {
                va = fa[gm * p.sam + gk * p.sak];
                if (PRO == 1u) { va = f_bn_act(va, gk, p.k); }
            }
            as_[kk][mm] = va;
            let gn = n0 + mm;
            var vb = 0.0;
            if (gk < k_end && gn < p.n) {
                vb = fb[gk * p.sbk + gn * p.sbn];
                if (PRO == 2u) { vb = f_bn_act(vb, gn, p.n); }
            }
            bs_[kk][mm] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk = kk + 1u) {
            var ra: array<f32, 4>;
            var rb: array<f32, 4>;
            for (var i = 0u; i < 4u; i = i + 1u) {
                ra[i] = as_[kk][lid.y + 16u * i];
                rb[i] = bs_[kk][lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i = i + 1u) {
                for (var j = 0u; j < 4u; j = j + 1u) {
                    acc[i][j] = acc[i][j] + ra[i] * rb[j];
                }
            }
        }
        workgroupBarrier();
    }
    let zoff = z * p.m * p.n;
    for (var i = 0u; i < 4u; i = i + 1u) {
        let gm = m0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let gn = n0 + lid.x + 16u * j;
            if (gm < p.m && gn < p.n) {
                var v = acc[i][j];
                if (BIAS == 1u) { v = v + f_bias[gn]; }
                fc[zoff + gm * p.n + gn] = v;
            }
        }
    }
}
