//! Matrix product twins.

/// a [m, k] · b [k, n]
pub fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for l in 0..k {
            let av = a[i * k + l];
            for j in 0..n {
                c[i * n + j] += av * b[l * n + j];
            }
        }
    }
    c
}

pub fn transpose(a: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut t = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = a[i * c + j];
        }
    }
    t
}

/// x `[m, k]`, w `[o, k]`, b `[o]` → x·wᵀ + b
pub fn linear(x: &[f64], w: &[f64], b: Option<&[f64]>, m: usize, k: usize, o: usize) -> Vec<f64> {
    let mut y = matmul(x, &transpose(w, o, k), m, k, o);
    if let Some(b) = b {
        for i in 0..m {
            for j in 0..o {
                y[i * o + j] += b[j];
            }
        }
    }
    y
}

pub fn linear_bwd_input(g: &[f64], w: &[f64], m: usize, k: usize, o: usize) -> Vec<f64> {
    matmul(g, w, m, o, k)
}

pub fn linear_bwd_weight(g: &[f64], x: &[f64], m: usize, k: usize, o: usize) -> Vec<f64> {
    matmul(&transpose(g, m, o), x, o, m, k)
}

pub fn linear_bwd_bias(g: &[f64], m: usize, o: usize) -> Vec<f64> {
    let mut b = vec![0.0; o];
    for i in 0..m {
        for j in 0..o {
            b[j] += g[i * o + j];
        }
    }
    b
}
