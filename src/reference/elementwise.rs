//! Element-wise twins.

pub fn relu(x: &[f64]) -> Vec<f64> {
    leaky_relu(x, 0.0)
}
pub fn leaky_relu(x: &[f64], slope: f64) -> Vec<f64> {
    x.iter()
        .map(|&v| if v > 0.0 { v } else { slope * v })
        .collect()
}
pub fn leaky_relu_bwd_input(x: &[f64], g: &[f64], slope: f64) -> Vec<f64> {
    x.iter()
        .zip(g)
        .map(|(&v, &g)| if v > 0.0 { g } else { slope * g })
        .collect()
}
pub fn sigmoid(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect()
}
pub fn sigmoid_bwd_input(y: &[f64], g: &[f64]) -> Vec<f64> {
    y.iter().zip(g).map(|(&y, &g)| g * y * (1.0 - y)).collect()
}
pub fn lincomb(a: &[f64], alpha: f64, b: &[f64], beta: f64) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| alpha * x + beta * y).collect()
}
pub fn mul(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x * y).collect()
}
/// x `[.., C (axis), inner]` + `b[C]`
pub fn bias_add(x: &[f64], shape: &[usize], b: &[f64], axis: usize) -> Vec<f64> {
    let inner: usize = shape[axis + 1..].iter().product();
    let c = shape[axis];
    x.iter()
        .enumerate()
        .map(|(i, &v)| v + b[(i / inner) % c])
        .collect()
}
pub fn bias_bwd_bias(g: &[f64], shape: &[usize], axis: usize) -> Vec<f64> {
    let inner: usize = shape[axis + 1..].iter().product();
    let c = shape[axis];
    let mut out = vec![0.0; c];
    for (i, &v) in g.iter().enumerate() {
        out[(i / inner) % c] += v;
    }
    out
}
