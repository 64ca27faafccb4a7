// The 16x16x16 product contract of conv_mma.wgsl built from 8x8x8 fragments, for matrix
// units whose tile is 8x8 (Apple's simdgroup matrices: wgpu translates cooperative matrices
// to Metal's f16 x f16 -> f32 simdgroup multiply-add). Joined after conv_mma.wgsl and before
// one 8x8 back-end, which provides:
//   types A8, B8, F8 (an 8x8 A or B operand, an 8x8 f32 accumulator);
//   load_a8(off) / load_b8(off): the 8x8 operand at As[off] / Bs[off] (row-major, strides
//   AST / BST); mma8(a, b, c, lane) = a * b + c; store8(c, off, lane): c column-major with
//   stride 16 at Cs[off].
//   mma8_coop.wgsl      cooperative matrices coop_mat8x8;
//   mma8_emulated.wgsl  the same fragments lane by lane (any adapter with SHADER_F16).
// A 16x16 accumulator is four fragments, rows 0-7 / 8-15 by columns 0-7 / 8-15; a 16-deep
// product is two 8-deep steps. The operands stay in workgroup memory: a 16x16 operand is its
// offset, its fragments are loaded where they are multiplied.

alias AOp = u32;
alias BOp = u32;

struct Acc {
    c00: F8,   // rows 0-7, columns 0-7
    c10: F8,   // rows 8-15, columns 0-7
    c01: F8,   // rows 0-7, columns 8-15
    c11: F8,   // rows 8-15, columns 8-15
}

fn load_a(off: u32) -> AOp {
    return off;
}

fn load_b(off: u32) -> BOp {
    return off;
}

fn mma(a: AOp, b: BOp, c: Acc, lane: u32) -> Acc {
    var r = c;
    for (var kk = 0u; kk < 16u; kk = kk + 8u) {
        let a0 = load_a8(a + kk);
        let a1 = load_a8(a + 8u * AST + kk);
        let b0 = load_b8(b + kk * BST);
        let b1 = load_b8(b + kk * BST + 8u);
        r.c00 = mma8(a0, b0, r.c00, lane);
        r.c10 = mma8(a1, b0, r.c10, lane);
        r.c01 = mma8(a0, b1, r.c01, lane);
        r.c11 = mma8(a1, b1, r.c11, lane);
    }
    return r;
}

fn store_acc(c: Acc, off: u32, lane: u32) {
    store8(c.c00, off, lane);
    store8(c.c10, off + 8u, lane);
    store8(c.c01, off + 128u, lane);
    store8(c.c11, off + 136u, lane);
}
