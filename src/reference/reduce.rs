//! Reduction twins.

/// Sum over `axes` of a row-major tensor of `shape`; the result has the other axes in order.
pub fn sum_axes(x: &[f64], shape: &[usize], axes: &[usize]) -> Vec<f64> {
    let keep: Vec<usize> = (0..shape.len()).filter(|a| !axes.contains(a)).collect();
    let oshape: Vec<usize> = keep.iter().map(|&a| shape[a]).collect();
    let mut out = vec![0.0; oshape.iter().product::<usize>().max(1)];
    let mut idx = vec![0usize; shape.len()];
    for &v in x {
        let mut o = 0;
        for &a in &keep {
            o = o * shape[a] + idx[a];
        }
        out[o] += v;
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}
