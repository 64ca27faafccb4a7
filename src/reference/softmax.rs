//! Softmax twins over axis 1 of [N, C, S].

pub fn softmax(x: &[f64], n: usize, c: usize, s: usize) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for nn in 0..n {
        for ss in 0..s {
            let at = |k: usize| (nn * c + k) * s + ss;
            let m = (0..c).map(|k| x[at(k)]).fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = (0..c).map(|k| (x[at(k)] - m).exp()).sum();
            for k in 0..c {
                y[at(k)] = (x[at(k)] - m).exp() / z;
            }
        }
    }
    y
}

pub fn softmax_bwd_input(y: &[f64], g: &[f64], n: usize, c: usize, s: usize) -> Vec<f64> {
    let mut gx = vec![0.0; y.len()];
    for nn in 0..n {
        for ss in 0..s {
            let at = |k: usize| (nn * c + k) * s + ss;
            let d: f64 = (0..c).map(|k| g[at(k)] * y[at(k)]).sum();
            for k in 0..c {
                gx[at(k)] = y[at(k)] * (g[at(k)] - d);
            }
        }
    }
    gx
}

pub fn argmax_channels(x: &[f64], n: usize, c: usize, s: usize) -> Vec<u32> {
    let mut out = vec![0u32; n * s];
    for nn in 0..n {
        for ss in 0..s {
            let mut best = x[nn * c * s + ss];
            let mut arg = 0;
            for k in 1..c {
                let v = x[(nn * c + k) * s + ss];
                if v > best {
                    best = v;
                    arg = k as u32;
                }
            }
            out[nn * s + ss] = arg;
        }
    }
    out
}

/// `argmax_channels(softmax(x))` on samples `start..start + len`.
pub fn argmax_softmax(
    x: &[f64],
    n: usize,
    c: usize,
    s: usize,
    start: usize,
    len: usize,
) -> Vec<u32> {
    assert!(start + len <= n);
    let part = &x[start * c * s..(start + len) * c * s];
    argmax_channels(&softmax(part, len, c, s), len, c, s)
}
