//! Optimiser twins (f64).

/// One PyTorch SGD step: returns (w', buf'). `g' = g + wd·w`; `buf' = g'` on the first step,
/// else `momentum·buf + g'`; `w' = w - lr·buf'`.
pub fn sgd_step(
    w: &[f64],
    g: &[f64],
    buf: &[f64],
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    first_step: bool,
) -> (Vec<f64>, Vec<f64>) {
    let mut nw = Vec::with_capacity(w.len());
    let mut nb = Vec::with_capacity(w.len());
    for i in 0..w.len() {
        let gp = g[i] + weight_decay * w[i];
        let b = if first_step {
            gp
        } else {
            momentum * buf[i] + gp
        };
        nb.push(b);
        nw.push(w[i] - lr * b);
    }
    (nw, nb)
}
