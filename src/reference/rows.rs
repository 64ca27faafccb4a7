//! Row-op twins.

pub fn l2norm_rows(x: &[f64], m: usize, d: usize, eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; m * d];
    for r in 0..m {
        let n = x[r * d..(r + 1) * d]
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt()
            .max(eps);
        for j in 0..d {
            y[r * d + j] = x[r * d + j] / n;
        }
    }
    y
}

pub fn l2norm_rows_bwd_input(x: &[f64], g: &[f64], m: usize, d: usize, eps: f64) -> Vec<f64> {
    let mut gx = vec![0.0; m * d];
    for r in 0..m {
        let xs = &x[r * d..(r + 1) * d];
        let gs = &g[r * d..(r + 1) * d];
        let n = xs.iter().map(|v| v * v).sum::<f64>().sqrt();
        if n <= eps {
            for j in 0..d {
                gx[r * d + j] = gs[j] / eps;
            }
            continue;
        }
        let gy: f64 = xs.iter().zip(gs).map(|(a, b)| a * b).sum::<f64>() / n;
        for j in 0..d {
            gx[r * d + j] = (gs[j] - xs[j] / n * gy) / n;
        }
    }
    gx
}

/// normalize(a) · normalize(b)ᵀ: [m, k]
pub fn cosine_similarity(a: &[f64], b: &[f64], m: usize, k: usize, d: usize) -> Vec<f64> {
    let an = l2norm_rows(a, m, d, 1e-12);
    let bn = l2norm_rows(b, k, d, 1e-12);
    super::matmul::matmul(&an, &super::matmul::transpose(&bn, k, d), m, d, k)
}

/// [N, C, S] → [N·S, C]
pub fn to_rows(x: &[f64], n: usize, c: usize, s: usize) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for nn in 0..n {
        for cc in 0..c {
            for ss in 0..s {
                y[(nn * s + ss) * c + cc] = x[(nn * c + cc) * s + ss];
            }
        }
    }
    y
}

/// Rows of x [m, d] where mask is set.
pub fn masked_rows(x: &[f64], mask: &[bool], d: usize) -> Vec<f64> {
    mask.iter()
        .enumerate()
        .filter(|(_, &b)| b)
        .flat_map(|(r, _)| x[r * d..(r + 1) * d].to_vec())
        .collect()
}
