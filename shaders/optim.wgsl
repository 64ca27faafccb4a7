// Optimiser steps, in place.
//
// sgd_step: PyTorch SGD (dampening 0, no Nesterov), per element:
//   g' = g + wd * w;  buf = g' on the first step, else momentum * buf + g';  w = w - lr * buf.
// Binding contract: @binding(0) params (uniform SgdParams), then w (read_write), g (read),
// buf (read_write). Grid: 1-D over n, folded into 2-D, bound-checked.

struct SgdParams {
    n: u32,
    first: u32,
    _pad0: u32,
    _pad1: u32,
    lr: f32,
    momentum: f32,
    wd: f32,
    _pad2: f32,
}

@group(0) @binding(0) var<uniform> p: SgdParams;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> buf: array<f32>;

@compute @workgroup_size(256)
fn sgd_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n) { return; }
    let wi = w[i];
    let gp = g[i] + p.wd * wi;
    var b = gp;
    if (p.first == 0u) {
        b = p.momentum * buf[i] + gp;
    }
    buf[i] = b;
    w[i] = wi - p.lr * b;
}
