// 8x8 back-end of mma8.wgsl on cooperative matrices (wgpu's EXPERIMENTAL_COOPERATIVE_MATRIX):
// f16 x f16 products accumulated in f32, 8x8x8 (Metal's simdgroup matrices). Every call is
// made in uniform control flow; strides go through a `let` (as in mma_coop.wgsl).

alias A8 = coop_mat8x8<f16, A>;
alias B8 = coop_mat8x8<f16, B>;
alias F8 = coop_mat8x8<f32, C>;

fn load_a8(off: u32) -> A8 {
    let st = AST;
    return coopLoadT<coop_mat8x8<f16, A>>(&As[off], st);
}

fn load_b8(off: u32) -> B8 {
    let st = BST;
    return coopLoadT<coop_mat8x8<f16, B>>(&Bs[off], st);
}

fn mma8(a: A8, b: B8, c: F8, lane: u32) -> F8 {
    return coopMultiplyAdd(a, b, c);
}

fn store8(c: F8, off: u32, lane: u32) {
    let st = 16u;
    coopStore(c, &Cs[off], st);
}
