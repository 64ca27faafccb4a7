//! Tensors over the storage-binding limit: the ops that work in pieces (the element-wise
//! family, dropout, uniform noise, the SGD and EMA updates, the grouped EMA's slots) bind
//! them a range at a time and give the same bits as one whole launch; the others refuse them
//! naming the limit. A device opened with a 1 MiB binding limit
//! (`GpuOptions::max_binding_bytes`, the `SSNET_MAX_BINDING_BYTES` knob) makes a 3 MiB tensor
//! split into four pieces, the last one short, and the pieces cross channel boundaries of the
//! bias.

mod common;
use common::*;
use ssnet::autograd::backward_with;
use ssnet::gpu::{Gpu, GpuOptions};
use ssnet::ops;
use ssnet::reference as r;
use ssnet::tensor::Tensor;
use std::sync::Arc;

const LIMIT: u64 = 1 << 20;
/// 787,455 f32 (3,149,820 bytes): three whole 1 MiB pieces and a short one; 52,497 (odd) per
/// channel, so pieces start inside channels.
const SHAPE: [usize; 3] = [3, 5, 52_497];

fn small_binding() -> Arc<Gpu> {
    Gpu::with_options(
        std::env::var("SSNET_DEVICE").ok().as_deref(),
        GpuOptions {
            max_binding_bytes: Some(LIMIT),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_f32().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// Forward and backward of a chain of every splittable op, then the in-place updates; each
/// result as bits, named.
fn run(g: &Arc<Gpu>) -> Vec<(&'static str, Vec<u32>)> {
    let n: usize = SHAPE.iter().product();
    let x = upload(g, &r::normal(1, n), &SHAPE).with_grad();
    let y = upload(g, &r::normal(2, n), &SHAPE).with_grad();
    let up = upload(g, &r::normal(3, n), &SHAPE);
    let bias = upload(g, &r::normal(4, SHAPE[1]), &[SHAPE[1]]);
    let s = ops::add(&x, &y).unwrap();
    let d = ops::sub(&x, &y).unwrap();
    let p = ops::mul(&s, &d).unwrap();
    let den = ops::affine(&ops::sigmoid(&y).unwrap(), 1.0, 0.5).unwrap();
    let q = ops::div(&p, &den).unwrap();
    let lr = ops::leaky_relu(&q, 0.1).unwrap();
    let t = ops::axpy(&ops::sigmoid(&lr).unwrap(), 0.3, &ops::relu(&d).unwrap()).unwrap();
    let b = ops::bias_add(&t, &bias, 1).unwrap();
    let out = ops::dropout(&ops::scale(&b, 2.0).unwrap(), 0.25, 7).unwrap();
    let grads = backward_with(&out, &up).unwrap();
    let (gx, gy) = (grads.get(&x).unwrap(), grads.get(&y).unwrap());

    let noise = ops::uniform(g, &SHAPE, 0x1234_5678_9abc).unwrap();
    let filled = Tensor::full(g, &SHAPE, 0.75).unwrap();
    let (w, m) = (ops::scale(&q, 1.0).unwrap(), ops::scale(&d, 1.0).unwrap());
    ops::sgd_step(&w, gx, &m, 0.01, 0.9, 1e-4, true).unwrap();
    ops::sgd_step(&w, gy, &m, 0.01, 0.9, 1e-4, false).unwrap();
    let teacher = ops::scale(&s, 1.0).unwrap();
    ops::admt::ema_into(&teacher, &noise, 0.99).unwrap();
    vec![
        ("mul", bits(&p)),
        ("div", bits(&q)),
        ("leaky_relu", bits(&lr)),
        ("bias_add", bits(&b)),
        ("dropout", bits(&out)),
        ("grad x", bits(gx)),
        ("grad y", bits(gy)),
        ("uniform", bits(&noise)),
        ("fill", bits(&filled)),
        ("sgd weight", bits(&w)),
        ("sgd momentum", bits(&m)),
        ("ema", bits(&teacher)),
    ]
}

#[test]
fn split_launches_give_the_bits_of_whole_ones_forward_and_backward() {
    let small = small_binding();
    assert_eq!(small.max_binding(), LIMIT);
    let whole = gpu();
    let bytes = SHAPE.iter().product::<usize>() as u64 * 4;
    assert!(bytes > 3 * LIMIT && bytes <= whole.max_binding(), "{bytes}");
    let (a, b) = (run(&small), run(&whole));
    for ((name, got), (_, want)) in a.iter().zip(&b) {
        assert_eq!(got.len(), want.len(), "{name}");
        let differ = got.iter().zip(want).filter(|(x, y)| x != y).count();
        assert_eq!(differ, 0, "{name}: {differ} elements differ split vs whole");
    }
    // The same tensors are over the small device's limit for a kernel that binds them whole
    // (every dispatch checks its bindings), so the results above came from pieces.
    let n: usize = SHAPE.iter().product();
    let x = upload(&small, &r::normal(1, n), &SHAPE);
    assert!(ops::sum_all(&x).is_err());
}

fn assert_names_the_limit(what: &str, e: ssnet::Error) {
    let e = e.to_string();
    assert!(
        e.contains("max_storage_buffer_binding_size")
            && e.contains("SSNET_MAX_BINDING_BYTES")
            && e.contains("does not work in pieces")
            && !e.contains('\n'),
        "{what}: {e}"
    );
}

/// A reduction, a convolution and a batch range cannot work in pieces: over the binding
/// limit they are refused with the limit named (and nothing is run).
#[test]
fn ops_that_cannot_split_refuse_naming_the_limit() {
    let g = small_binding();
    let n: usize = SHAPE.iter().product();
    let x = upload(&g, &r::normal(1, n), &SHAPE);
    assert_names_the_limit("sum_all", ops::sum_all(&x).unwrap_err());
    assert_names_the_limit(
        "narrow_batch",
        ops::narrow_batch(&x, 0, 2).map(drop).unwrap_err(),
    );
    let xs = [1usize, 2, 40, 40, 90];
    let ws = [2usize, 2, 3, 3, 3];
    let xc = upload(&g, &r::normal(5, xs.iter().product()), &xs);
    let wc = upload(&g, &r::normal(6, ws.iter().product()), &ws);
    assert_names_the_limit(
        "conv3d",
        ops::conv3d(&xc, &wc, None, 1, 1).map(drop).unwrap_err(),
    );
    // A broadcast operand read whole by every piece must itself fit.
    let big_bias = upload(&g, &r::normal(7, n / SHAPE[0]), &[n / SHAPE[0]]);
    let e = ops::bias_add(&x.reshape(&[SHAPE[0], n / SHAPE[0]]).unwrap(), &big_bias, 1)
        .map(drop)
        .unwrap_err();
    assert_names_the_limit("bias_add with a large bias", e);
}

#[test]
fn the_binding_knob_rejects_junk() {
    let e = Gpu::with_options(
        None,
        GpuOptions {
            max_binding_bytes: Some(1000),
            ..Default::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("1000"), "{e}");
}

/// The grouped EMA (AD-MT's teachers) under the 1 MiB binding limit: a 3 MiB tensor is cut
/// into four pieces, each a slot of its own beside whole small tensors, and every tensor gets
/// the bits of the per-tensor kernel on the unrestricted device, in the dispatches the plan
/// counts.
#[test]
fn grouped_ema_cuts_tensors_over_the_binding_limit_into_slots() {
    let small = small_binding();
    let whole = ssnet::gpu::Gpu::new(std::env::var("SSNET_DEVICE").ok().as_deref()).unwrap();
    let big: usize = SHAPE.iter().product();
    let lens = [5usize, big, 257, (LIMIT as usize / 4) + 1, 1000, 3];
    let make = |g: &Arc<Gpu>, seed: u64| -> Vec<Tensor> {
        lens.iter()
            .enumerate()
            .map(|(i, &n)| upload(g, &r::normal(seed + i as u64, n), &[n]))
            .collect()
    };
    let run_on = |g: &Arc<Gpu>, grouped: bool| -> (Vec<Vec<u32>>, u64) {
        let (t, s) = (make(g, 10), make(g, 20));
        g.sync().unwrap();
        let before = g.dispatches();
        if grouped {
            let pairs: Vec<(&Tensor, &Tensor)> = t.iter().zip(&s).collect();
            ops::ema::ema_many(&pairs, 0.99).unwrap();
        } else {
            for (a, b) in t.iter().zip(&s) {
                ops::admt::ema_into(a, b, 0.99).unwrap();
            }
        }
        let n = g.dispatches() - before;
        (t.iter().map(bits).collect(), n)
    };
    let (want, per_tensor) = run_on(&whole, false);
    assert_eq!(per_tensor, lens.len() as u64);
    let (got, grouped) = run_on(&small, true);
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
        assert_eq!(
            differ, 0,
            "tensor {i} of {} elements: {differ} differ",
            lens[i]
        );
    }
    // 4 pieces of the big tensor, 2 of the one just over the limit, 4 whole: 10 slots.
    let piece = LIMIT as usize / 4;
    let plan = ops::ema::ema_plan(&lens, ops::ema::ema_slots(&small), piece).unwrap();
    assert_eq!(plan.iter().map(Vec::len).sum::<usize>(), 10);
    assert_eq!(grouped, plan.len() as u64);
    assert!(plan.iter().flatten().all(|s| s.len <= piece));
}
