// The convolution GEMMs of conv.wgsl on f16 tiles with f32 accumulation, for matrix units
// (tensor cores). conv_mma: out[n, col, voxel(m)] = sum_k A[m, k] * B[k, col] (+ bias[col]),
// the forward and the stride-1 input gradient (conv_gemm's geometry and params, see
// conv_common.wgsl and src/ops/conv.rs); wgrad_mma: the weight gradient (conv_wgrad's).
//
// Joined after conv_common.wgsl and before one back-end, which provides 16x16x16 products:
//   mma_coop.wgsl      cooperative matrices (wgpu's EXPERIMENTAL_COOPERATIVE_MATRIX);
//   mma_emulated.wgsl  the same products lane by lane on the same f16 tiles (any adapter with
//                      SHADER_F16: it lets the tests check this file where no matrix unit is).
// Back-end contract: types AOp, BOp, Acc; load_a(off) reads the 16x16 A tile at As[off]
// (row-major, row stride AST); load_b(off) the B tile at Bs[off] (row-major, stride BST);
// mma(a, b, c, lane) = a * b + c; store_acc(c, off, lane) writes c column-major (stride 16)
// at Cs[off]. A declared `var c: Acc;` starts at zero.
//
// Tiles: 256 invocations = 8 subgroups of 32 lanes arranged SGM x SGN (SGM * SGN = 8); a
// subgroup holds TM x TN accumulators (16 TM rows x 16 TN columns), so a workgroup computes
// TBM = 16 TM SGM rows x TBN = 16 TN SGN columns. K is staged MK = 32 at a time: A gathered
// from the source (the implicit GEMM, decoded as in conv_gemm: one fixed row per invocation,
// the stage's reduction indices decoded two stages ahead into workgroup memory) and B read
// from the weights, both scaled and rounded to f16 into workgroup memory, with a register
// prefetch of the next stage. Split-K as in conv_gemm (partials at split * m * n).
//
// Range: f16 spans 2^-24 .. 65504, gradients are often far below 2^-14. Each operand is
// multiplied by a power of two (exact) that brings its largest magnitude into [2^14, 2^15):
// mma_absmax reduces max|x| per workgroup, mma_scales turns the maxima into [sa, sb,
// 1 / (sa sb)] on the GPU (no readback), and the epilogue multiplies by 1 / (sa sb). Maxima
// of zero, NaN or infinity get scale 1 (NaN and infinity then propagate as in f32).
// Params reuse ConvParams: mma_absmax reads p.m elements of src, each of p.nchunks workgroups
// covering p.chunk of them, and writes its maximum at red_out[p.sc + workgroup];
// mma_scales reads the p.nchunks maxima of A then of B from src.

@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
// [sa, sb, 1 / (sa * sb)]
@group(0) @binding(5) var<storage, read> scales: array<f32>;
// mma_absmax: the per-workgroup maxima; mma_scales: the scales.
@group(0) @binding(2) var<storage, read_write> red_out: array<f32>;
// wgrad_mma: the output gradient, the partial weight gradients, the scales [s_g, s_x, inv].
@group(0) @binding(2) var<storage, read> gout: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst3: array<f32>;
@group(0) @binding(4) var<storage, read> wscales: array<f32>;

override SGM: u32 = 4u;          // subgroups along the rows
override SGN: u32 = 2u;          // subgroups along the columns (SGM * SGN == 8)
override TM: u32 = 2u;           // 16-row accumulators per subgroup (1 or 2)
override TN: u32 = 2u;           // 16-column accumulators per subgroup (1 or 2)
override TBM: u32 = SGM * TM * 16u;  // rows per workgroup tile
override TBN: u32 = SGN * TN * 16u;  // columns per workgroup tile
override BST: u32 = TBN + 8u;    // Bs row stride in halves (padded against bank conflicts)

const MK: u32 = 32u;             // reduction step per stage
const AST: u32 = MK + 8u;        // As row stride in halves
const MWG: u32 = 256u;

var<workgroup> As: array<f16, TBM * AST>;        // [TBM][AST]: A, rows m, columns k
var<workgroup> Bs: array<f16, MK * BST>;         // [MK][BST]: B, rows k, columns
var<workgroup> Cs: array<f32, 8u * 256u>;        // one 16x16 accumulator per subgroup
var<workgroup> mTabK: array<vec4<i32>, 2u * MK>; // two stages of decoded k
var<workgroup> mOffK: array<u32, 2u * MK>;       // their weight offsets
var<workgroup> red: array<f32, MWG>;
var<workgroup> mTabW: array<vec4<i32>, 2u * MK>; // wgrad_mma: two stages of decoded rows m
var<workgroup> mGW: array<u32, 2u * MK>;         // their output-gradient offsets
var<workgroup> kTabW: array<vec4<i32>, TBN>;     // wgrad_mma: this tile's columns k

// Multiply by 2^k, k from max|x| = f 2^e (f in [0.5, 1)): max|x| 2^k in [2^14, 2^15).
fn pow2_exponent(mx: f32) -> i32 {
    if (!(mx > 0.0) || mx > 3.0e38) {
        return 0;
    }
    return clamp(15 - frexp(mx).exp, -60, 60);
}

@compute @workgroup_size(256)
fn mma_absmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let beg = wid.x * p.chunk;
    let end = min(p.m, beg + p.chunk);
    var mx = 0.0;
    for (var i = beg + t; i < end; i = i + MWG) {
        let v = abs(src[i]);
        // NaN wins (it must reach pow2_exponent), then the largest magnitude.
        if (v != v || v > mx) {
            mx = v;
        }
    }
    red[t] = mx;
    workgroupBarrier();
    for (var s = MWG / 2u; s > 0u; s = s / 2u) {
        if (t < s) {
            let o = red[t + s];
            if (o != o || o > red[t]) {
                red[t] = o;
            }
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        red_out[p.sc + wid.x] = red[0];
    }
}

@compute @workgroup_size(256)
fn mma_scales(@builtin(local_invocation_index) t: u32) {
    // Invocation 0 reduces the maxima of A, invocation 1 those of B.
    if (t < 2u) {
        var mx = 0.0;
        for (var i = 0u; i < p.nchunks; i = i + 1u) {
            let v = src[t * p.nchunks + i];
            if (v != v || v > mx) {
                mx = v;
            }
        }
        red[t] = f32(pow2_exponent(mx));
    }
    workgroupBarrier();
    if (t == 0u) {
        let ka = i32(red[0]);
        let kb = i32(red[1]);
        red_out[0] = ldexp(1.0, ka);
        red_out[1] = ldexp(1.0, kb);
        red_out[2] = ldexp(1.0, -(ka + kb));
    }
}

// Writes accumulator block `cs` (column-major in Cs at `cbase`) to rows row0.., columns
// col0.. of the output: lane handles elements lane + 32 i (consecutive lanes, consecutive
// voxels).
fn write_block(cbase: u32, row0: u32, col0: u32, lane: u32, obase: u32, add_bias: bool, inv: f32) {
    for (var i = 0u; i < 8u; i = i + 1u) {
        let e = lane + 32u * i;
        let m = row0 + (e & 15u);
        let c = col0 + (e >> 4u);
        if (m < p.m && c < p.n) {
            var v = Cs[cbase + e] * inv;
            if (add_bias) {
                v = v + bias[c];
            }
            let nb = m / p.mv;
            dst[obase + (nb * p.n + c) * p.mv + (m - nb * p.mv)] = v;
        }
    }
}

@compute @workgroup_size(256)
fn conv_mma(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let tile = wid.y * nwg.x + wid.x;
    if (tile >= p.tiles_total) {
        return;
    }
    let per_split = p.tiles_total / p.nchunks;
    let split = tile / per_split;
    let rest = tile - split * per_split;
    let m0 = (rest / p.tiles_n) * TBM;
    let n0 = (rest % p.tiles_n) * TBN;
    let kbeg = split * p.chunk;
    let kend = min(p.k, kbeg + p.chunk);
    let steps = (kend - kbeg + MK - 1u) / MK;
    let sa = scales[0];
    let sb = scales[1];

    // A loads: row am (fixed), reduction rows ak + astep * i.
    let am = t % TBM;
    let ak = t / TBM;
    let astep = MWG / TBM;
    let la = MK / astep;
    var mb = invalid_m();
    if (m0 + am < p.m) {
        let nb = (m0 + am) / p.mv;
        mb = decode_m(nb, m0 + am - nb * p.mv);
    }
    // B loads: reduction row bk (fixed), columns bn + 8 i.
    let bk = t % MK;
    let bn = t / MK;
    let lb = TBN / 8u;
    // This subgroup's accumulators: rows ar, ar + 16; columns bc (, bc + 16).
    let sg = t / 32u;
    let lane = t % 32u;
    let ar = (sg % SGM) * TM * 16u;
    let bc = (sg / SGM) * TN * 16u;

    if (t < MK) {
        mTabK[t] = decode_k(kbeg + t, kend);
        mOffK[t] = weight_off(kbeg + t);
    }
    workgroupBarrier();
    var ra: array<f32, 32>;
    var rb: array<f32, 16>;
    for (var i = 0u; i < la; i = i + 1u) {
        ra[i] = gather(mb, mTabK[ak + astep * i]);
    }
    for (var i = 0u; i < lb; i = i + 1u) {
        let nn = bn + 8u * i;
        var v = 0.0;
        if (kbeg + bk < kend && n0 + nn < p.n) {
            v = wt[mOffK[bk] + (n0 + nn) * p.wstride];
        }
        rb[i] = v;
    }
    if (t < MK) {
        mTabK[MK + t] = decode_k(kbeg + MK + t, kend);
        mOffK[MK + t] = weight_off(kbeg + MK + t);
    }

    var c00: Acc;
    var c10: Acc;
    var c01: Acc;
    var c11: Acc;
    for (var s = 0u; s < steps; s = s + 1u) {
        for (var i = 0u; i < la; i = i + 1u) {
            As[am * AST + ak + astep * i] = f16(ra[i] * sa);
        }
        for (var i = 0u; i < lb; i = i + 1u) {
            Bs[bk * BST + bn + 8u * i] = f16(rb[i] * sb);
        }
        workgroupBarrier();
        // Prefetch stage s + 1 (its table was decoded during stage s - 1).
        if (s + 1u < steps) {
            let tb = ((s + 1u) & 1u) * MK;
            for (var i = 0u; i < la; i = i + 1u) {
                ra[i] = gather(mb, mTabK[tb + ak + astep * i]);
            }
            let kg = kbeg + (s + 1u) * MK + bk;
            for (var i = 0u; i < lb; i = i + 1u) {
                let nn = bn + 8u * i;
                var v = 0.0;
                if (kg < kend && n0 + nn < p.n) {
                    v = wt[mOffK[tb + bk] + (n0 + nn) * p.wstride];
                }
                rb[i] = v;
            }
        }
        // Decode stage s + 2 into the slot stage s used.
        if (t < MK) {
            let k2 = kbeg + (s + 2u) * MK + t;
            mTabK[(s & 1u) * MK + t] = decode_k(k2, kend);
            mOffK[(s & 1u) * MK + t] = weight_off(k2);
        }
        for (var kk = 0u; kk < MK; kk = kk + 16u) {
            let a0 = load_a(ar * AST + kk);
            let b0 = load_b(kk * BST + bc);
            c00 = mma(a0, b0, c00, lane);
            if (TN == 2u) {
                let b1 = load_b(kk * BST + bc + 16u);
                c01 = mma(a0, b1, c01, lane);
                if (TM == 2u) {
                    let a1 = load_a((ar + 16u) * AST + kk);
                    c10 = mma(a1, b0, c10, lane);
                    c11 = mma(a1, b1, c11, lane);
                }
            } else if (TM == 2u) {
                let a1 = load_a((ar + 16u) * AST + kk);
                c10 = mma(a1, b0, c10, lane);
            }
        }
        workgroupBarrier();
    }

    // Epilogue: each accumulator through this subgroup's 16x16 slot of Cs.
    let inv = scales[2];
    let obase = split * p.m * p.n;
    let add_bias = p.has_bias != 0u && split == 0u;
    let cbase = sg * 256u;
    let row0 = m0 + ar;
    let col0 = n0 + bc;
    store_acc(c00, cbase, lane);
    workgroupBarrier();
    write_block(cbase, row0, col0, lane, obase, add_bias, inv);
    if (TM == 2u) {
        workgroupBarrier();
        store_acc(c10, cbase, lane);
        workgroupBarrier();
        write_block(cbase, row0 + 16u, col0, lane, obase, add_bias, inv);
    }
    if (TN == 2u) {
        workgroupBarrier();
        store_acc(c01, cbase, lane);
        workgroupBarrier();
        write_block(cbase, row0, col0 + 16u, lane, obase, add_bias, inv);
        if (TM == 2u) {
            workgroupBarrier();
            store_acc(c11, cbase, lane);
            workgroupBarrier();
            write_block(cbase, row0 + 16u, col0 + 16u, lane, obase, add_bias, inv);
        }
    }
}

// ---------------------------------------------------------------- wgrad_mma
// The weight gradient of conv_wgrad (conv.wgsl) on f16 tiles: part[chunk, co, k] = sum over
// the rows m of the chunk of g[m, co] * A[m, k], rows = Co (TBM per tile), columns k = Ci*kv
// (TBN per tile), the N*voxels reduction staged MK rows at a time in `nchunks` fixed chunks
// (summed in a fixed order by the caller). The A tile is g transposed, As[co][m]; the B tile
// the gathered source, Bs[m][k]; the products and accumulators are those of conv_mma. Scales:
// wscales = [s_g, s_x, 1 / (s_g s_x)].

fn wgrad_decode_mma(m: u32, end: u32, slot: u32) {
    if (m < end) {
        let nb = m / p.mv;
        let v = m - nb * p.mv;
        mTabW[slot] = decode_m(nb, v);
        mGW[slot] = nb * p.rows * p.mv + v;
    } else {
        mTabW[slot] = invalid_m();
        mGW[slot] = INVALID;
    }
}

// Writes accumulator block (rows co0.., columns k0..) of chunk `chunk`.
fn write_wblock(cbase: u32, co0: u32, k0: u32, lane: u32, chunk: u32, inv: f32) {
    for (var i = 0u; i < 8u; i = i + 1u) {
        let e = lane + 32u * i;
        let co = co0 + (e & 15u);
        let k = k0 + (e >> 4u);
        if (co < p.rows && k < p.n) {
            dst3[(chunk * p.rows + co) * p.n + k] = Cs[cbase + e] * inv;
        }
    }
}

@compute @workgroup_size(256)
fn wgrad_mma(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let tile = wid.y * nwg.x + wid.x;
    if (tile >= p.tiles_total) {
        return;
    }
    let per_chunk = p.tiles_r * p.tiles_n;
    let chunk = tile / per_chunk;
    let rest = tile - chunk * per_chunk;
    let r0 = (rest / p.tiles_n) * TBM;
    let c0 = (rest % p.tiles_n) * TBN;
    let mbeg = chunk * p.chunk;
    let mend = min(p.m, mbeg + p.chunk);
    let steps = (mend - mbeg + MK - 1u) / MK;
    let sg_ = wscales[0];
    let sx_ = wscales[1];

    // Loads: stage row rr (fixed: consecutive invocations, consecutive voxels), g rows /
    // x columns lrow + 8 i.
    let rr = t % MK;
    let lrow = t / MK;
    let lg = TBM / 8u;
    let lx = TBN / 8u;
    let sg = t / 32u;
    let lane = t % 32u;
    let ar = (sg % SGM) * TM * 16u;
    let bc = (sg / SGM) * TN * 16u;

    for (var i = t; i < TBN; i = i + MWG) {
        kTabW[i] = decode_k(c0 + i, p.n);
    }
    if (t < MK) {
        wgrad_decode_mma(mbeg + t, mend, t);
    }
    workgroupBarrier();
    var rg: array<f32, 32>;
    var rx: array<f32, 32>;
    {
        let mt = mTabW[rr];
        let gb = mGW[rr];
        for (var i = 0u; i < lg; i = i + 1u) {
            let c = lrow + 8u * i;
            var v = 0.0;
            if (gb != INVALID && r0 + c < p.rows) {
                v = gout[gb + (r0 + c) * p.mv];
            }
            rg[i] = v;
        }
        for (var i = 0u; i < lx; i = i + 1u) {
            rx[i] = gather(mt, kTabW[lrow + 8u * i]);
        }
    }
    if (t < MK) {
        wgrad_decode_mma(mbeg + MK + t, mend, MK + t);
    }

    var c00: Acc;
    var c10: Acc;
    var c01: Acc;
    var c11: Acc;
    for (var s = 0u; s < steps; s = s + 1u) {
        for (var i = 0u; i < lg; i = i + 1u) {
            As[(lrow + 8u * i) * AST + rr] = f16(rg[i] * sg_);
        }
        for (var i = 0u; i < lx; i = i + 1u) {
            Bs[rr * BST + lrow + 8u * i] = f16(rx[i] * sx_);
        }
        workgroupBarrier();
        if (s + 1u < steps) {
            let slot = ((s + 1u) & 1u) * MK + rr;
            let mt = mTabW[slot];
            let gb = mGW[slot];
            for (var i = 0u; i < lg; i = i + 1u) {
                let c = lrow + 8u * i;
                var v = 0.0;
                if (gb != INVALID && r0 + c < p.rows) {
                    v = gout[gb + (r0 + c) * p.mv];
                }
                rg[i] = v;
            }
            for (var i = 0u; i < lx; i = i + 1u) {
                rx[i] = gather(mt, kTabW[lrow + 8u * i]);
            }
        }
        if (t < MK) {
            wgrad_decode_mma(mbeg + (s + 2u) * MK + t, mend, (s & 1u) * MK + t);
        }
        for (var kk = 0u; kk < MK; kk = kk + 16u) {
            let a0 = load_a(ar * AST + kk);
            let b0 = load_b(kk * BST + bc);
            c00 = mma(a0, b0, c00, lane);
            if (TN == 2u) {
                let b1 = load_b(kk * BST + bc + 16u);
                c01 = mma(a0, b1, c01, lane);
                if (TM == 2u) {
                    let a1 = load_a((ar + 16u) * AST + kk);
                    c10 = mma(a1, b0, c10, lane);
                    c11 = mma(a1, b1, c11, lane);
                }
            } else if (TM == 2u) {
                let a1 = load_a((ar + 16u) * AST + kk);
                c10 = mma(a1, b0, c10, lane);
            }
        }
        workgroupBarrier();
    }

    let inv = wscales[2];
    let cbase = sg * 256u;
    let co0 = r0 + ar;
    let k0 = c0 + bc;
    store_acc(c00, cbase, lane);
    workgroupBarrier();
    write_wblock(cbase, co0, k0, lane, chunk, inv);
    if (TM == 2u) {
        workgroupBarrier();
        store_acc(c10, cbase, lane);
        workgroupBarrier();
        write_wblock(cbase, co0 + 16u, k0, lane, chunk, inv);
    }
    if (TN == 2u) {
        workgroupBarrier();
        store_acc(c01, cbase, lane);
        workgroupBarrier();
        write_wblock(cbase, co0, k0 + 16u, lane, chunk, inv);
        if (TM == 2u) {
            workgroupBarrier();
            store_acc(c11, cbase, lane);
            workgroupBarrier();
            write_wblock(cbase, co0 + 16u, k0 + 16u, lane, chunk, inv);
        }
    }
}
