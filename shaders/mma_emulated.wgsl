// Back-end of conv_mma.wgsl without matrix units: each of the 32 lanes of a (virtual)
// subgroup computes 8 elements of the 16x16 accumulator from the same f16 tiles, in f32. The
// operands stay in workgroup memory (a load is its offset). Lane l owns column l / 2, rows
// (l % 2) * 8 .. + 8, i.e. elements l * 8 .. + 8 of the column-major tile.

alias AOp = u32;
alias BOp = u32;
alias Acc = array<f32, 8>;

fn load_a(off: u32) -> AOp {
    return off;
}

fn load_b(off: u32) -> BOp {
    return off;
}

fn mma(a: AOp, b: BOp, c: Acc, lane: u32) -> Acc {
    var acc = c;
    let col = lane / 2u;
    let r0 = (lane % 2u) * 8u;
    for (var k = 0u; k < 16u; k = k + 1u) {
        let bv = f32(Bs[b + k * BST + col]);
        for (var i = 0u; i < 8u; i = i + 1u) {
            acc[i] = fma(f32(As[a + (r0 + i) * AST + k]), bv, acc[i]);
        }
    }
    return acc;
}

fn store_acc(c: Acc, off: u32, lane: u32) {
    for (var i = 0u; i < 8u; i = i + 1u) {
        Cs[off + lane * 8u + i] = c[i];
    }
}
