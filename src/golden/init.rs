//! `splitmix-uniform-v1`: starting weights that a fixture names by a seed instead of storing
//! them (three 9.4 M parameter VNets would not make a small fixture). `tools/admt_golden.py`
//! draws the official networks' weights by the same rule, so both sides start from the same
//! float32 values, bit for bit; each fixture stores their summaries (`init.<model>.<key>`) so
//! a test proves it first.
//!
//! ```text
//! h_i = splitmix64(splitmix64(seed XOR fnv1a64(key)) + i)      (wrapping u64)
//! u_i = (h_i >> 40) / 2^24                                      (24 bits, exact in f64)
//! v_i = float32(a + b * (2 u_i - 1))                            (f64 arithmetic)
//! ```
//!
//! (a, b) = (0, 1/sqrt(fan_in)) for tensors of 2+ axes (fan_in = `shape[1] · prod(shape[2..])`,
//! PyTorch's default bound), (1, 0.25) for a 1-axis `.weight` (a BatchNorm scale), (2.5, 0.5)
//! for a BatchNorm shift (a `.bias` beside a `.running_mean`: it keeps most pre-activations
//! away from the ReLU's kink, where float32 rounding would decide), (0, 0.1) for other
//! `.bias` and `running_mean`, (1, 0.25) for `running_var`.

use crate::error::{Error, Result};
use crate::nn::spec::ParamSpec;
use std::collections::BTreeMap;

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01B3)
    })
}

/// The values of one tensor `key` of `shape` under `seed`; `norm_shift`: the tensor is a
/// BatchNorm shift.
pub fn hashed_values(key: &str, shape: &[usize], seed: u64, norm_shift: bool) -> Result<Vec<f32>> {
    let (a, b) = if norm_shift {
        (2.5, 0.5)
    } else if key.ends_with("running_mean") || key.ends_with(".bias") {
        (0.0, 0.1)
    } else if key.ends_with("running_var") {
        (1.0, 0.25)
    } else if shape.len() >= 2 {
        let fan_in: usize = shape[1..].iter().product();
        (0.0, 1.0 / (fan_in as f64).sqrt())
    } else if key.ends_with(".weight") {
        (1.0, 0.25)
    } else {
        return Err(Error::msg(format!(
            "splitmix-uniform-v1 has no rule for '{key}' {shape:?}"
        )));
    };
    let base = splitmix64(seed ^ fnv1a64(key));
    let n: usize = shape.iter().product();
    Ok((0..n as u64)
        .map(|i| {
            let u = (splitmix64(base.wrapping_add(i)) >> 40) as f64 / 16_777_216.0;
            (a + b * (2.0 * u - 1.0)) as f32
        })
        .collect())
}

/// Every tensor of `specs` (parameters and BatchNorm buffers) under `seed`.
pub fn hashed_init(specs: &[ParamSpec], seed: u64) -> Result<BTreeMap<String, Vec<f32>>> {
    let names: std::collections::BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let norm_shift = |key: &str| {
        key.strip_suffix("bias").is_some_and(|p| {
            p.ends_with('.') && names.contains(format!("{p}running_mean").as_str())
        })
    };
    specs
        .iter()
        .map(|s| {
            let v = hashed_values(&s.name, &s.shape, seed, norm_shift(&s.name))?;
            Ok((s.name.clone(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_their_definitions() {
        // FNV-1a 64 of "a" and SplitMix64's first output from state 0 (published values).
        assert_eq!(fnv1a64("a"), 0xAF63_DC4C_8601_EC8C);
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn rules_follow_the_key_and_shape() {
        let w = hashed_values("block_one.conv.0.weight", &[16, 1, 3, 3, 3], 7, false).unwrap();
        let bound = 1.0 / 27f64.sqrt();
        assert!(w.iter().all(|&v| (v as f64).abs() <= bound));
        assert!(w.iter().any(|&v| v < 0.0) && w.iter().any(|&v| v > 0.0));
        let g = hashed_values("block_one.conv.1.weight", &[16], 7, false).unwrap();
        assert!(g.iter().all(|&v| (0.75..=1.25).contains(&v)));
        let var = hashed_values("block_one.conv.1.running_var", &[16], 7, false).unwrap();
        assert!(var.iter().all(|&v| v >= 0.75));
        assert_ne!(
            hashed_values("x.bias", &[4], 1, false).unwrap(),
            hashed_values("x.bias", &[4], 2, false).unwrap()
        );
        let shift = hashed_values("x.bias", &[64], 1, true).unwrap();
        assert!(shift.iter().all(|&v| (2.0..=3.0).contains(&v)));
        assert!(hashed_values("x.scale", &[4], 1, false).is_err());
    }
}
