//! GPU timing with timestamp queries (`Gpu::timing_begin` / `timing_end`) on real dispatches:
//! positive times, busy <= span, a session with no pass, query-set growth past one set,
//! nesting, and the error for an end without a begin. One test function: timing sessions are
//! per device, and the tests of one binary share it.

mod common;
use common::*;
use ssnet::autograd::no_grad;
use ssnet::ops;

#[test]
fn gpu_timing_of_real_passes() {
    let g = gpu();
    let a = ops::uniform(&g, &[96, 80], 1).unwrap();
    let b = ops::uniform(&g, &[80, 72], 2).unwrap();
    g.sync().unwrap();

    // Work recorded before the session is not counted: its pass is closed at timing_begin.
    let _before = ops::matmul(&a, &b).unwrap();
    g.timing_begin();
    let t = g.timing_end().unwrap();
    if !g.has_timestamps() {
        // The wall-clock fallback: no GPU times, said so by `None` (the benchmark says so too).
        assert!(t.is_none(), "no TIMESTAMP_QUERY but a GPU time: {t:?}");
        eprintln!(
            "{}: no TIMESTAMP_QUERY, timing_end gives None",
            g.describe()
        );
        return;
    }
    let empty = t.expect("timestamps are offered");
    assert_eq!(empty.passes, 0, "{empty:?}");
    assert_eq!((empty.span_ms, empty.busy_ms), (0.0, 0.0), "{empty:?}");

    // Two passes split by a readback (which submits and waits inside the session).
    no_grad(|| {
        g.timing_begin();
        let c = ops::matmul(&a, &b).unwrap();
        let d = ops::relu(&c).unwrap();
        let host = d.to_f32().unwrap();
        assert_eq!(host.len(), 96 * 72);
        let e = ops::matmul(&d, &ops::uniform(&g, &[72, 64], 3).unwrap()).unwrap();
        drop(e);
        let t = g.timing_end().unwrap().unwrap();
        println!("two passes: {t:?}");
        assert_eq!(t.passes, 2, "{t:?}");
        assert!(t.busy_ms > 0.0 && t.span_ms > 0.0, "{t:?}");
        assert!(t.busy_ms <= t.span_ms * (1.0 + 1e-9), "{t:?}");
    });

    // More passes than one query set holds (1024 queries = 512 passes): a second set.
    let x = ops::uniform(&g, &[1000], 4).unwrap();
    g.timing_begin();
    for _ in 0..600 {
        let y = ops::relu(&x).unwrap();
        drop(y);
        g.with_encoder(|_| ()); // ends the compute pass: the next dispatch opens another
    }
    let t = g.timing_end().unwrap().unwrap();
    println!("600 passes: {t:?}");
    assert_eq!(t.passes, 600, "{t:?}");
    assert!(
        t.busy_ms > 0.0 && t.busy_ms <= t.span_ms * (1.0 + 1e-9),
        "{t:?}"
    );

    // Nesting: a pass belongs to the innermost open session.
    g.timing_begin();
    let _p = ops::matmul(&a, &b).unwrap();
    g.timing_begin();
    let _q = ops::matmul(&a, &b).unwrap();
    let inner = g.timing_end().unwrap().unwrap();
    let _r = ops::matmul(&a, &b).unwrap();
    let outer = g.timing_end().unwrap().unwrap();
    assert_eq!((inner.passes, outer.passes), (1, 2), "{inner:?} {outer:?}");
    assert!(
        outer.span_ms >= outer.busy_ms && outer.busy_ms > 0.0,
        "{outer:?}"
    );

    // An end without a begin is a one-line error naming the call.
    let e = g.timing_end().unwrap_err().to_string();
    assert!(e.starts_with("timing_end:") && !e.contains('\n'), "{e}");
}
