//! The schedules of an AD-MT run (ADMT.md §4 steps 9, 11, 12, 13).

use rand::Rng;
use rand_pcg::Pcg32;
use serde::{Deserialize, Serialize};

/// Which teacher the EMA updates (state A: teacher 1, state B: teacher 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Teacher {
    One,
    Two,
}

impl Teacher {
    pub fn other(self) -> Teacher {
        match self {
            Teacher::One => Teacher::Two,
            Teacher::Two => Teacher::One,
        }
    }
}

/// The alternation: starts with teacher 1, switches after `period` steps, then draws a new
/// period uniform in `1..=max_period` (the official `TU:13-21, 53-60`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeacherSchedule {
    pub updated: Teacher,
    pub counter: u32,
    pub period: u32,
    pub max_period: u32,
}

impl TeacherSchedule {
    /// The schedule at step 0 (the first period is drawn here, as the official scheduler does
    /// when it is built). `max_period` ≥ 1.
    pub fn new(max_period: u32, rng: &mut Pcg32) -> TeacherSchedule {
        let max_period = max_period.max(1);
        TeacherSchedule {
            updated: Teacher::One,
            counter: 0,
            period: rng.random_range(1..=max_period),
            max_period,
        }
    }

    /// After a step: count it, and switch the updated teacher when the period is over.
    pub fn advance(&mut self, rng: &mut Pcg32) {
        self.counter += 1;
        if self.counter >= self.period {
            self.updated = self.updated.other();
            self.counter = 0;
            self.period = rng.random_range(1..=self.max_period);
        }
    }
}

/// The EMA decay at step `k` (counting from 0): `g = ⌊k/2⌋`; 0 (a copy) while `g < rampup`,
/// else `min(1 − 1/(g − rampup + 1), cap)` (T3:40-53; one counter for both teachers).
pub fn ema_alpha(k: u64, rampup: u64, cap: f64) -> f64 {
    let g = k / 2;
    if g < rampup {
        0.0
    } else {
        (1.0 - 1.0 / ((g - rampup + 1) as f64)).min(cap)
    }
}

/// The unsupervised weight at step `k`: `weight · exp(−5 (1 − min(⌊k/150⌋, R)/R)²)`, the
/// sigmoid ramp-up over epochs of 150 iterations (ramps.py:19-26, T3:342); `weight` when
/// `rampup` is 0.
pub fn unsup_weight(k: u64, weight: f64, rampup: u64) -> f64 {
    if rampup == 0 {
        return weight;
    }
    let t = (k / 150).min(rampup) as f64 / rampup as f64;
    weight * (-5.0 * (1.0 - t) * (1.0 - t)).exp()
}

/// The poly learning rate for the step after step `k`: `base · (1 − k/max)^power`
/// (T3:362-365: applied after step k, so steps 0 and 1 both run at `base`).
pub fn poly_lr(base: f64, k: u64, max_iterations: u64, power: f64) -> f64 {
    let max = max_iterations.max(1) as f64;
    base * (1.0 - (k as f64 / max).min(1.0)).powf(power)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn alternation_switches_after_each_drawn_period() {
        let mut rng = Pcg32::seed_from_u64(3);
        let mut s = TeacherSchedule::new(19, &mut rng);
        assert_eq!(s.updated, Teacher::One);
        let mut runs = vec![];
        let (mut cur, mut len) = (s.updated, 0u32);
        let mut periods = vec![s.period];
        for _ in 0..2000 {
            len += 1;
            s.advance(&mut rng);
            if s.updated != cur {
                runs.push(len);
                periods.push(s.period);
                cur = s.updated;
                len = 0;
            }
        }
        // Each run lasts exactly the period drawn for it, every period in 1..=19, all seen.
        for (r, p) in runs.iter().zip(&periods) {
            assert_eq!(r, p);
        }
        assert!(periods.iter().all(|&p| (1..=19).contains(&p)));
        for p in 1..=19 {
            assert!(periods.contains(&p), "period {p} never drawn");
        }
    }

    #[test]
    fn ema_decay_copies_then_warms_up_to_the_cap() {
        // LA: R = 40. A copy up to k = 2R + 1, then 1 - 1/(g - R + 1), 0.99 from k = 2R + 198.
        assert_eq!(ema_alpha(0, 40, 0.99), 0.0);
        assert_eq!(ema_alpha(81, 40, 0.99), 0.0);
        assert_eq!(ema_alpha(82, 40, 0.99), 0.5); // g = 41: 1 - 1/2
        assert!((ema_alpha(84, 40, 0.99) - (1.0 - 1.0 / 3.0)).abs() < 1e-15);
        assert!(ema_alpha(276, 40, 0.99) < 0.99);
        assert_eq!(ema_alpha(278, 40, 0.99), 0.99);
        assert_eq!(ema_alpha(100_000, 40, 0.99), 0.99);
    }

    #[test]
    fn ramp_and_poly() {
        assert!((unsup_weight(0, 2.0, 40) - 2.0 * (-5.0f64).exp()).abs() < 1e-15);
        assert!((unsup_weight(149, 2.0, 40) - unsup_weight(0, 2.0, 40)).abs() < 1e-15);
        assert!(
            (unsup_weight(150, 2.0, 40) - 2.0 * (-5.0 * (39.0f64 / 40.0).powi(2)).exp()).abs()
                < 1e-15
        );
        assert_eq!(unsup_weight(6000, 2.0, 40), 2.0);
        assert_eq!(poly_lr(0.01, 0, 15000, 0.9), 0.01);
        assert!((poly_lr(0.01, 7500, 15000, 0.9) - 0.01 * 0.5f64.powf(0.9)).abs() < 1e-15);
        assert_eq!(poly_lr(0.01, 15000, 15000, 0.9), 0.0);
    }
}
