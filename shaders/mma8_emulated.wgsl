// 8x8 back-end of mma8.wgsl without matrix units: each of the 32 lanes of a (virtual)
// subgroup computes 2 elements of an 8x8 fragment from the same f16 tiles, in f32. Lane l
// owns column l / 4, rows (l % 4) * 2 .. + 2 of the fragment. The operands stay in workgroup
// memory (a fragment load is its offset).

alias A8 = u32;
alias B8 = u32;
alias F8 = array<f32, 2>;

fn load_a8(off: u32) -> A8 {
    return off;
}

fn load_b8(off: u32) -> B8 {
    return off;
}

fn mma8(a: A8, b: B8, c: F8, lane: u32) -> F8 {
    var acc = c;
    let col = lane / 4u;
    let r0 = (lane % 4u) * 2u;
    for (var k = 0u; k < 8u; k = k + 1u) {
        let bv = f32(Bs[b + k * BST + col]);
        for (var i = 0u; i < 2u; i = i + 1u) {
            acc[i] = fma(f32(As[a + (r0 + i) * AST + k]), bv, acc[i]);
        }
    }
    return acc;
}

fn store8(c: F8, off: u32, lane: u32) {
    let col = lane / 4u;
    let r0 = (lane % 4u) * 2u;
    for (var i = 0u; i < 2u; i = i + 1u) {
        Cs[off + col * 16u + r0 + i] = c[i];
    }
}
