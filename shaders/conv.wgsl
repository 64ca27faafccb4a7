// Convolutions as implicit GEMMs (no im2col buffer), forward and backwards.
// Rust side: src/ops/conv.rs (it documents which entry point serves which op).
// Joined after conv_common.wgsl (params, source, decoders): see src/gpu/shaders.rs.
//
// conv_gemm: out[n, col, voxel(m)] = sum_k A[m, k] * B[k, col] (+ bias[col]) with
//   B[k, col] = wt[woff(k) + col * wstride], woff(k) = c * wc + (k mod kv):
//   forward: wc = kv, wstride = K (w [Co, Ci*kv]); input gradient: wc = Ci*kv, wstride = kv.
//   Tiles: BM x BN outputs per 256-invocation workgroup, 4x4 per invocation, K staged BK at a
//   time through workgroup memory with a register prefetch of the next stage. With few
//   output tiles the reduction is split into `nchunks` ranges of `chunk` (split-K), each
//   writing its partial output at offset split * m * n (the caller sums them in order). Each
//   invocation loads A for one fixed row (its row's coordinates are decoded once); the
//   reduction indices of a stage are decoded by BK invocations into a small table in
//   workgroup memory two stages ahead (double-buffered), so no invocation divides per load.
// conv_gemm_narrow: the same product for at most 4 columns, A gathered straight from memory.
// conv_wgrad: part[chunk, co, k] = sum over the rows m of the chunk of g[m, co] * A[m, k]:
//   the weight gradient, rows of g (Co) x columns k (Ci*kv), the N*voxels reduction split into
//   `nchunks` fixed chunks (the caller sums the chunk partials in a fixed order: no atomics).
//   Same tiling, the row tables (m) decoded two stages ahead, the column table once; small
//   outputs use small tiles with the stage's rows shared out among G groups of invocations.
// conv_bwd_input_direct: one invocation per input-gradient element, a plain gather over
//   (co, dx, dy, dz) with the stride's divisibility test: strided convolutions other than
//   kernel == stride (those go through the transposed-conv GEMM of conv_transpose.wgsl).
//
// Grids: workgroup id = wid.y * nwg.x + wid.x (folded into 2-D past the per-dimension limit),
// bound-checked against tiles_total (uniform per workgroup, before any barrier).
// Index maths in u32 (the caller checks every tensor has < 2^31 elements, so the signed
// source offsets fit i32).

// conv_gemm, conv_bwd_input_direct: the weights.
@group(0) @binding(2) var<storage, read> wt: array<f32>;
// conv_wgrad: the output gradient.
@group(0) @binding(2) var<storage, read> gout: array<f32>;
// conv_gemm: the bias (any buffer when has_bias == 0).
@group(0) @binding(3) var<storage, read> bias: array<f32>;
// conv_wgrad: partial weight gradients [nchunks, Co, K]; direct: the input gradient.
@group(0) @binding(3) var<storage, read_write> dst3: array<f32>;
// conv_gemm: the output.
@group(0) @binding(4) var<storage, read_write> dst4: array<f32>;

override BM: u32 = 64u;   // rows per tile (a power of two, <= 256)
override BN: u32 = 64u;   // columns per tile (BM * BN == 4096: 256 invocations x 4x4)
override BK: u32 = 16u;   // reduction step (8 or 16)

const WG: u32 = 256u;

// ---------------------------------------------------------------- conv_gemm

var<workgroup> As: array<vec4<f32>, BK * BM / 4u>;         // [BK][BM]
var<workgroup> Bs: array<vec4<f32>, BK * (BN + 4u) / 4u>;  // [BK][BN + 4] (padded rows)
var<workgroup> kTab: array<vec4<i32>, 2u * BK>;             // two stages of decoded k
var<workgroup> kOff: array<u32, 2u * BK>;                   // their weight offsets

@compute @workgroup_size(256)
fn conv_gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let tile = wid.y * nwg.x + wid.x;
    if (tile >= p.tiles_total) {
        return;
    }
    // Split-K: split `split` covers reduction indices [kbeg, kend) and writes its own
    // partial output (split 0 adds the bias).
    let per_split = p.tiles_total / p.nchunks;
    let split = tile / per_split;
    let rest = tile - split * per_split;
    let m0 = (rest / p.tiles_n) * BM;
    let n0 = (rest % p.tiles_n) * BN;
    let kbeg = split * p.chunk;
    let kend = min(p.k, kbeg + p.chunk);

    // A loads: row am (fixed), reduction rows ak + astep * i.
    let am = t % BM;
    let ak = t / BM;
    let astep = WG / BM;
    let la = (BK * BM + WG - 1u) / WG;
    var mb = invalid_m();
    if (m0 + am < p.m) {
        let nb = (m0 + am) / p.mv;
        mb = decode_m(nb, m0 + am - nb * p.mv);
    }
    // B loads: reduction row bk (fixed, consecutive invocations read consecutive weights),
    // columns bn + bstep * i.
    let bk = t % BK;
    let bn = t / BK;
    let bstep = WG / BK;
    let lb = (BK * BN + WG - 1u) / WG;
    let steps = (kend - kbeg + BK - 1u) / BK;
    // Compute mapping: rows tm*4..+4, columns tn*4..+4.
    let tm = t % (BM / 4u);
    let tn = t / (BM / 4u);

    if (t < BK) {
        kTab[t] = decode_k(kbeg + t, kend);
        kOff[t] = weight_off(kbeg + t);
    }
    workgroupBarrier();
    var ra: array<f32, 8>;
    var rb: array<f32, 8>;
    for (var i = 0u; i < la; i = i + 1u) {
        let kk = ak + astep * i;
        var v = 0.0;
        if (kk < BK) {
            v = gather(mb, kTab[kk]);
        }
        ra[i] = v;
    }
    for (var i = 0u; i < lb; i = i + 1u) {
        let nn = bn + bstep * i;
        var v = 0.0;
        if (nn < BN && kbeg + bk < kend && n0 + nn < p.n) {
            v = wt[kOff[bk] + (n0 + nn) * p.wstride];
        }
        rb[i] = v;
    }
    if (t < BK) {
        kTab[BK + t] = decode_k(kbeg + BK + t, kend);
        kOff[BK + t] = weight_off(kbeg + BK + t);
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
            let nn = bn + bstep * i;
            if (nn < BN) {
                let e = bk * (BN + 4u) + nn;
                Bs[e / 4u][e % 4u] = rb[i];
            }
        }
        workgroupBarrier();
        // Prefetch stage s + 1 (its table was decoded during stage s - 1).
        if (s + 1u < steps) {
            let tb = ((s + 1u) & 1u) * BK;
            for (var i = 0u; i < la; i = i + 1u) {
                let kk = ak + astep * i;
                var v = 0.0;
                if (kk < BK) {
                    v = gather(mb, kTab[tb + kk]);
                }
                ra[i] = v;
            }
            let kg = kbeg + (s + 1u) * BK + bk;
            for (var i = 0u; i < lb; i = i + 1u) {
                let nn = bn + bstep * i;
                var v = 0.0;
                if (nn < BN && kg < kend && n0 + nn < p.n) {
                    v = wt[kOff[tb + bk] + (n0 + nn) * p.wstride];
                }
                rb[i] = v;
            }
        }
        // Decode stage s + 2 into the slot stage s used.
        if (t < BK) {
            let k2 = kbeg + (s + 2u) * BK + t;
            kTab[(s & 1u) * BK + t] = decode_k(k2, kend);
            kOff[(s & 1u) * BK + t] = weight_off(k2);
        }
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            let a = As[(kk * BM) / 4u + tm];
            let b = Bs[(kk * (BN + 4u)) / 4u + tn];
            acc[0] = fma(vec4<f32>(a.x), b, acc[0]);
            acc[1] = fma(vec4<f32>(a.y), b, acc[1]);
            acc[2] = fma(vec4<f32>(a.z), b, acc[2]);
            acc[3] = fma(vec4<f32>(a.w), b, acc[3]);
        }
        workgroupBarrier();
    }

    let row0 = m0 + tm * 4u;
    let col0 = n0 + tn * 4u;
    let obase = split * p.m * p.n;
    let add_bias = p.has_bias != 0u && split == 0u;
    var nb = row0 / p.mv;
    var v = row0 - nb * p.mv;
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (row0 + j < p.m) {
            for (var i = 0u; i < 4u; i = i + 1u) {
                let c = col0 + i;
                if (c < p.n) {
                    var bv = 0.0;
                    if (add_bias) {
                        bv = bias[c];
                    }
                    dst4[obase + (nb * p.n + c) * p.mv + v] = acc[j][i] + bv;
                }
            }
        }
        v = v + 1u;
        if (v == p.mv) {
            v = 0u;
            nb = nb + 1u;
        }
    }
}

// ---------------------------------------------------------------- conv_gemm_narrow
// At most 4 columns (the input gradient of a 1-channel input, a 2- or 4-class output layer):
// every A element is used by one invocation only, so A is not staged: each invocation
// gathers its own 4 rows (m0 + t + 256 j: consecutive invocations, consecutive voxels)
// straight from memory; the stage's decoded reduction indices and B rows sit in workgroup
// memory. 1024 rows per workgroup, no split-K.

const NK: u32 = 32u;
var<workgroup> nTab: array<vec4<i32>, NK>;
var<workgroup> nB: array<vec4<f32>, NK>;

@compute @workgroup_size(256)
fn conv_gemm_narrow(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let tile = wid.y * nwg.x + wid.x;
    if (tile >= p.tiles_total) {
        return;
    }
    let m0 = tile * 4u * WG;
    var mb: array<vec4<i32>, 4>;
    for (var j = 0u; j < 4u; j = j + 1u) {
        let m = m0 + t + WG * j;
        if (m < p.m) {
            let nb = m / p.mv;
            mb[j] = decode_m(nb, m - nb * p.mv);
        } else {
            mb[j] = invalid_m();
        }
    }
    var acc: array<vec4<f32>, 4>;
    let steps = (p.k + NK - 1u) / NK;
    for (var s = 0u; s < steps; s = s + 1u) {
        workgroupBarrier();
        if (t < NK) {
            let k = s * NK + t;
            nTab[t] = decode_k(k, p.k);
            var b = vec4<f32>(0.0);
            if (k < p.k) {
                let wo = weight_off(k);
                for (var c = 0u; c < 4u; c = c + 1u) {
                    if (c < p.n) {
                        b[c] = wt[wo + c * p.wstride];
                    }
                }
            }
            nB[t] = b;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < NK; kk = kk + 1u) {
            let e = nTab[kk];
            let b = nB[kk];
            for (var j = 0u; j < 4u; j = j + 1u) {
                acc[j] = fma(vec4<f32>(gather(mb[j], e)), b, acc[j]);
            }
        }
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
        let m = m0 + t + WG * j;
        if (m < p.m) {
            let nb = m / p.mv;
            let v = m - nb * p.mv;
            for (var c = 0u; c < p.n; c = c + 1u) {
                var bv = 0.0;
                if (p.has_bias != 0u) {
                    bv = bias[c];
                }
                dst4[(nb * p.n + c) * p.mv + v] = acc[j][c] + bv;
            }
        }
    }
}

// ---------------------------------------------------------------- conv_wgrad
// G groups of 256 / G invocations (override G, 1 for the big tiles): a stage holds SR = G * BK
// reduction rows, group gi multiplies rows gi*BK.. of it into its own BM x BN accumulators
// (BM * BN = 4096 / G), and the groups' sums are added into group 0's in the order 1, 2, ..
// G-1 through workgroup memory at the end (small weight gradients: Co·Ci·k³ of a few hundred
// would waste most of a 64x64 tile).

override G: u32 = 1u;

var<workgroup> Gs: array<vec4<f32>, G * BK * (BM + 4u) / 4u>;  // [SR][BM + 4]: g rows (Co)
var<workgroup> Xs: array<vec4<f32>, G * BK * (BN + 4u) / 4u>;  // [SR][BN + 4]: gathered x (k)
var<workgroup> mTab: array<vec4<i32>, 2u * G * BK>;             // two stages of decoded rows m
var<workgroup> mG: array<u32, 2u * G * BK>;                     // their g offsets (or INVALID)
var<workgroup> kTabW: array<vec4<i32>, BN>;                     // this tile's columns k
var<workgroup> red: array<vec4<f32>, (BM * BN / 4u) * min(G - 1u, 1u) + 1u>;  // group sums

fn wgrad_decode(m: u32, end: u32, slot: u32) {
    if (m < end) {
        let nb = m / p.mv;
        let v = m - nb * p.mv;
        mTab[slot] = decode_m(nb, v);
        mG[slot] = nb * p.rows * p.mv + v;
    } else {
        mTab[slot] = invalid_m();
        mG[slot] = INVALID;
    }
}

@compute @workgroup_size(256)
fn conv_wgrad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let tile = wid.y * nwg.x + wid.x;
    if (tile >= p.tiles_total) {
        return;
    }
    let per_chunk = p.tiles_r * p.tiles_n;
    let chunk = tile / per_chunk;
    let rest = tile - chunk * per_chunk;
    let r0 = (rest / p.tiles_n) * BM;
    let c0 = (rest % p.tiles_n) * BN;
    let mbeg = chunk * p.chunk;
    let mend = min(p.m, mbeg + p.chunk);
    let sr = G * BK;
    let steps = (mend - mbeg + sr - 1u) / sr;

    // Loads: stage row rr (fixed; consecutive invocations read consecutive voxels),
    // g rows / x columns lrow + lstep * i.
    let rr = t % sr;
    let lrow = t / sr;
    let lstep = WG / sr;
    let lg = (sr * BM + WG - 1u) / WG;
    let lx = (sr * BN + WG - 1u) / WG;
    // Compute: group gi, rows tm*4.., columns tn*4.. of the tile.
    let tpg = WG / G;
    let gi = t / tpg;
    let lt = t % tpg;
    let tm = lt % (BM / 4u);
    let tn = lt / (BM / 4u);

    for (var i = t; i < BN; i = i + WG) {
        kTabW[i] = decode_k(c0 + i, p.n);
    }
    if (t < sr) {
        wgrad_decode(mbeg + t, mend, t);
    }
    workgroupBarrier();
    var rg: array<f32, 8>;
    var rx: array<f32, 8>;
    {
        let mt = mTab[rr];
        let gb = mG[rr];
        for (var i = 0u; i < lg; i = i + 1u) {
            let c = lrow + lstep * i;
            var v = 0.0;
            if (c < BM && gb != INVALID && r0 + c < p.rows) {
                v = gout[gb + (r0 + c) * p.mv];
            }
            rg[i] = v;
        }
        for (var i = 0u; i < lx; i = i + 1u) {
            let kk = lrow + lstep * i;
            var v = 0.0;
            if (kk < BN) {
                v = gather(mt, kTabW[kk]);
            }
            rx[i] = v;
        }
    }
    if (t < sr) {
        wgrad_decode(mbeg + sr + t, mend, sr + t);
    }

    var acc: array<vec4<f32>, 4>;
    for (var s = 0u; s < steps; s = s + 1u) {
        for (var i = 0u; i < lg; i = i + 1u) {
            let c = lrow + lstep * i;
            if (c < BM) {
                let e = rr * (BM + 4u) + c;
                Gs[e / 4u][e % 4u] = rg[i];
            }
        }
        for (var i = 0u; i < lx; i = i + 1u) {
            let kk = lrow + lstep * i;
            if (kk < BN) {
                let e = rr * (BN + 4u) + kk;
                Xs[e / 4u][e % 4u] = rx[i];
            }
        }
        workgroupBarrier();
        if (s + 1u < steps) {
            let slot = ((s + 1u) & 1u) * sr + rr;
            let mt = mTab[slot];
            let gb = mG[slot];
            for (var i = 0u; i < lg; i = i + 1u) {
                let c = lrow + lstep * i;
                var v = 0.0;
                if (c < BM && gb != INVALID && r0 + c < p.rows) {
                    v = gout[gb + (r0 + c) * p.mv];
                }
                rg[i] = v;
            }
            for (var i = 0u; i < lx; i = i + 1u) {
                let kk = lrow + lstep * i;
                var v = 0.0;
                if (kk < BN) {
                    v = gather(mt, kTabW[kk]);
                }
                rx[i] = v;
            }
        }
        if (t < sr) {
            wgrad_decode(mbeg + (s + 2u) * sr + t, mend, (s & 1u) * sr + t);
        }
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            let row = gi * BK + kk;
            let a = Gs[(row * (BM + 4u)) / 4u + tm];
            let b = Xs[(row * (BN + 4u)) / 4u + tn];
            acc[0] = fma(vec4<f32>(a.x), b, acc[0]);
            acc[1] = fma(vec4<f32>(a.y), b, acc[1]);
            acc[2] = fma(vec4<f32>(a.z), b, acc[2]);
            acc[3] = fma(vec4<f32>(a.w), b, acc[3]);
        }
        workgroupBarrier();
    }

    // The groups' sums into group 0, in group order (a fixed order: deterministic).
    for (var r = 1u; r < G; r = r + 1u) {
        if (gi == r) {
            for (var j = 0u; j < 4u; j = j + 1u) {
                red[lt * 4u + j] = acc[j];
            }
        }
        workgroupBarrier();
        if (gi == 0u) {
            for (var j = 0u; j < 4u; j = j + 1u) {
                acc[j] = acc[j] + red[lt * 4u + j];
            }
        }
        workgroupBarrier();
    }
    if (gi != 0u) {
        return;
    }

    let row0 = r0 + tm * 4u;
    let col0 = c0 + tn * 4u;
    for (var j = 0u; j < 4u; j = j + 1u) {
        let co = row0 + j;
        if (co < p.rows) {
            for (var i = 0u; i < 4u; i = i + 1u) {
                let k = col0 + i;
                if (k < p.n) {
                    dst3[(chunk * p.rows + co) * p.n + k] = acc[j][i];
                }
            }
        }
    }
}

// ---------------------------------------------------------------- conv_bwd_input_direct
// gx [N, Ci, X, Y, Z] (Ci = p.n, m grid = X, Y, Z; p.m elements) from g (the source:
// Co = sc channels, OX, OY, OZ = sx, sy, sz) and w [Co, Ci, kx, ky, kz]; stride stx.., pad pdx...

@compute @workgroup_size(256)
fn conv_bwd_input_direct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + t;
    if (i >= p.m) {
        return;
    }
    let v = i % p.mv;
    let nc = i / p.mv;
    let ci = nc % p.n;
    let nb = nc / p.n;
    let myz = p.my * p.mz;
    let ix = v / myz;
    let r = v - ix * myz;
    let iy = r / p.mz;
    let iz = r - iy * p.mz;
    var acc = 0.0;
    for (var co = 0u; co < p.sc; co = co + 1u) {
        let gc = (nb * p.sc + co) * p.sv;
        let wcb = (co * p.n + ci) * p.kv;
        for (var dx = 0u; dx < p.kx; dx = dx + 1u) {
            let tx = i32(ix) + p.pdx - i32(dx);
            if (tx < 0 || tx % i32(p.stx) != 0 || u32(tx) / p.stx >= p.sx) {
                continue;
            }
            let ox = u32(tx) / p.stx;
            for (var dy = 0u; dy < p.ky; dy = dy + 1u) {
                let ty = i32(iy) + p.pdy - i32(dy);
                if (ty < 0 || ty % i32(p.sty) != 0 || u32(ty) / p.sty >= p.sy) {
                    continue;
                }
                let oy = u32(ty) / p.sty;
                for (var dz = 0u; dz < p.kz; dz = dz + 1u) {
                    let tz = i32(iz) + p.pdz - i32(dz);
                    if (tz < 0 || tz % i32(p.stz) != 0 || u32(tz) / p.stz >= p.sz) {
                        continue;
                    }
                    let oz = u32(tz) / p.stz;
                    acc = acc + src[gc + (ox * p.sy + oy) * p.sz + oz] * wt[wcb + (dx * p.ky + dy) * p.kz + dz];
                }
            }
        }
    }
    dst3[i] = acc;
}
