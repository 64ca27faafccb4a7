// Back-end of conv_mma.wgsl on cooperative matrices (tensor cores through wgpu's
// EXPERIMENTAL_COOPERATIVE_MATRIX): f16 x f16 products accumulated in f32, 16x16x16.
// The subgroup must be 32 lanes wide (the Rust side checks the adapter's subgroup sizes);
// every call is made in uniform control flow. Strides and offsets go through a `let`
// (naga 30's SPIR-V writer rejects them computed inside the call).

alias AOp = coop_mat16x16<f16, A>;
alias BOp = coop_mat16x16<f16, B>;
alias Acc = coop_mat16x16<f32, C>;

fn load_a(off: u32) -> AOp {
    let st = AST;
    return coopLoadT<coop_mat16x16<f16, A>>(&As[off], st);
}

fn load_b(off: u32) -> BOp {
    let st = BST;
    return coopLoadT<coop_mat16x16<f16, B>>(&Bs[off], st);
}

fn mma(a: AOp, b: BOp, c: Acc, lane: u32) -> Acc {
    return coopMultiplyAdd(a, b, c);
}

fn store_acc(c: Acc, off: u32, lane: u32) {
    let st = 16u;
    coopStore(c, &Cs[off], st);
}
