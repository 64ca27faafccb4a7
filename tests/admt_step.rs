//! The AD-MT training step (ADMT.md §4) on tiny shapes: finite terms, the EMA warm-up copy
//! into the updated teacher only, the alternation, bit-for-bit reproducibility, the
//! all-ignored masked CE, and a supervised loss that falls on a fixed batch.

mod common;
use common::gpu;
use ssnet::admt::{AdmtConfig, AdmtInputs, AdmtTrainer, Teacher, UnsupLoss};
use ssnet::gpu::Gpu;
use ssnet::nn::{Arch, Model, ModelConfig};
use ssnet::tensor::Tensor;
use std::collections::BTreeMap;
use std::sync::Arc;

const UNET: ModelConfig = ModelConfig {
    arch: Arch::UNet,
    in_channels: 1,
    num_classes: 4,
};
const VNET: ModelConfig = ModelConfig {
    arch: Arch::VNet,
    in_channels: 1,
    num_classes: 2,
};

struct Batch {
    labeled: Tensor,
    labels: Tensor,
    weak: Tensor,
    strong: Tensor,
}

impl Batch {
    fn inputs(&self) -> AdmtInputs<'_> {
        AdmtInputs {
            labeled: &self.labeled,
            labels: &self.labels,
            weak: &self.weak,
            strong: &self.strong,
        }
    }
}

/// A learnable batch: labels are nested boxes (classes 0..C), images the label plus noise;
/// L labelled and U unlabelled samples of spatial shape `dims`.
fn batch(g: &Arc<Gpu>, l: usize, u: usize, dims: &[usize], classes: usize, seed: u64) -> Batch {
    let vox: usize = dims.iter().product();
    let label_of = |sample: usize, v: usize| -> u32 {
        let mut rest = v;
        let mut r = 0usize;
        for &d in dims.iter().rev() {
            let x = rest % d;
            rest /= d;
            let shift = sample % 3;
            r = r.max((2 * x + 1).abs_diff(d + shift) * classes / (d + 2));
        }
        (classes - 1 - r.min(classes - 1)) as u32
    };
    let noise = ssnet::reference::normal(seed, (l + 2 * u) * vox);
    let img = |n: usize, off: usize, first: usize| -> Vec<f32> {
        (0..n * vox)
            .map(|i| {
                let (s, v) = (i / vox, i % vox);
                label_of(first + s, v) as f32 + 0.3 * noise[off + i] as f32
            })
            .collect()
    };
    let shape = |n: usize| {
        let mut s = vec![n, 1];
        s.extend_from_slice(dims);
        s
    };
    let labels: Vec<u32> = (0..l * vox).map(|i| label_of(i / vox, i % vox)).collect();
    let mut lshape = vec![l];
    lshape.extend_from_slice(dims);
    Batch {
        labeled: Tensor::from_f32(g, &img(l, 0, 0), &shape(l)).unwrap(),
        labels: Tensor::from_u32(g, &labels, &lshape).unwrap(),
        weak: Tensor::from_f32(g, &img(u, l * vox, l), &shape(u)).unwrap(),
        strong: Tensor::from_f32(g, &img(u, (l + u) * vox, l), &shape(u)).unwrap(),
    }
}

fn cfg_2d() -> AdmtConfig {
    AdmtConfig {
        max_iterations: 100,
        ..AdmtConfig::acdc()
    }
}

fn bits(m: &Model) -> BTreeMap<String, Vec<u32>> {
    m.state()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

fn all_finite(m: &Model) -> bool {
    m.state()
        .unwrap()
        .values()
        .all(|v| v.iter().all(|x| x.is_finite()))
}

#[test]
fn step_runs_and_returns_finite_terms_2d_and_3d() {
    let g = gpu();
    // ACDC-like: UNet, masked Dice; two steps.
    let b = batch(&g, 2, 2, &[32, 32], 4, 1);
    let mut t = AdmtTrainer::init(&g, UNET, cfg_2d(), 7).unwrap();
    for k in 0..2 {
        let r = t.step(&b.inputs()).unwrap();
        assert_eq!(r.iter, k + 1);
        for v in [r.loss, r.loss_sup, r.loss_ce, r.loss_dice, r.loss_unsup] {
            assert!(v.is_finite() && v >= 0.0, "{r:?}");
        }
        assert!(r.loss_ce > 0.0 && r.loss_dice > 0.0, "{r:?}");
        let want = r.loss_sup + r.unsup_weight * r.loss_unsup;
        assert!((r.loss - want).abs() <= 1e-6 * want.abs().max(1.0), "{r:?}");
        assert!(((r.loss_ce + r.loss_dice) / 2.0 - r.loss_sup).abs() < 1e-6);
        assert_eq!(r.lr, 0.01);
    }
    // the poly LR of step 2 is decided after step 1
    assert_eq!(t.lr, (0.01 * (1.0 - 1.0f64 / 100.0).powf(0.9)) as f32);
    assert_eq!(t.momentum_buffers().len(), t.student.params().len());
    // LA-like: VNet, masked CE; one step.
    let b = batch(&g, 1, 2, &[16, 16, 16], 2, 2);
    let mut t = AdmtTrainer::init(&g, VNET, AdmtConfig::la(), 8).unwrap();
    let r = t.step(&b.inputs()).unwrap();
    assert!(r.loss.is_finite() && r.loss_unsup.is_finite(), "{r:?}");
    assert!(all_finite(&t.student) && all_finite(&t.teacher1));
}

/// During the warm-up (k < 2R + 2) the EMA is a copy: after each step the updated teacher
/// holds the student's parameters and BatchNorm buffers exactly, the other teacher is
/// untouched (its eval-mode pass moves nothing), and the updated one is the schedule's.
#[test]
fn warmup_ema_copies_into_the_scheduled_teacher_only() {
    let g = gpu();
    let b = batch(&g, 2, 2, &[16, 16], 4, 3);
    let cfg = AdmtConfig {
        max_period: 2,
        ..cfg_2d()
    };
    let mut t = AdmtTrainer::init(&g, UNET, cfg, 9).unwrap();
    let mut seen = [false, false];
    let mut expected = t.schedule.clone();
    for _ in 0..4 {
        let updated = t.schedule.updated;
        assert_eq!(updated, expected.updated);
        let other_before = bits(t.teacher(updated.other()));
        let r = t.step(&b.inputs()).unwrap();
        assert_eq!(r.updated, updated);
        assert_eq!(r.ema_alpha, 0.0);
        assert_eq!(r.cutmix, updated == Teacher::Two);
        assert_eq!(
            bits(t.teacher(updated)),
            bits(&t.student),
            "{updated:?} is not a copy"
        );
        assert_eq!(
            bits(t.teacher(updated.other())),
            other_before,
            "{:?} changed",
            updated.other()
        );
        seen[(updated == Teacher::Two) as usize] = true;
        // the schedule counts the step and switches when its period is over
        expected.counter += 1;
        if expected.counter >= expected.period {
            expected.updated = expected.updated.other();
            expected.counter = 0;
            expected.period = t.schedule.period;
        }
        assert_eq!(t.schedule.updated, expected.updated);
        assert_eq!(t.schedule.counter, expected.counter);
        assert!((1..=2).contains(&t.schedule.period));
    }
    assert!(
        seen[0] && seen[1],
        "both teachers should be updated in 4 steps of period ≤ 2"
    );
}

#[test]
fn same_seed_same_bits_after_two_steps() {
    let g = gpu();
    let b = batch(&g, 2, 2, &[16, 16], 4, 4);
    let cfg = AdmtConfig {
        max_period: 1,
        ..cfg_2d()
    }; // step 0 updates teacher 1, step 1 teacher 2 (CutMix)
    let run = |seed: u64| {
        let mut t = AdmtTrainer::init(&g, UNET, cfg.clone(), seed).unwrap();
        let r: Vec<_> = (0..2).map(|_| t.step(&b.inputs()).unwrap()).collect();
        (r, bits(&t.student), bits(&t.teacher1), bits(&t.teacher2))
    };
    let a = run(21);
    assert!(a.0[1].cutmix);
    let b2 = run(21);
    assert_eq!(a.0, b2.0);
    assert!(
        a.1 == b2.1 && a.2 == b2.2 && a.3 == b2.3,
        "same seed, other weights"
    );
    let c = run(22);
    assert!(a.1 != c.1, "another seed gave the same student");
}

/// A threshold no confidence reaches drops every voxel: the masked CE is 0, not NaN, and the
/// weights stay finite.
#[test]
fn all_ignored_masked_ce_is_zero_not_nan() {
    let g = gpu();
    let b = batch(&g, 2, 2, &[16, 16], 4, 5);
    let cfg = AdmtConfig {
        threshold: 2.0,
        unsup: UnsupLoss::MaskedCe,
        ..cfg_2d()
    };
    let mut t = AdmtTrainer::init(&g, UNET, cfg, 10).unwrap();
    for _ in 0..2 {
        let r = t.step(&b.inputs()).unwrap();
        assert_eq!(r.loss_unsup, 0.0, "{r:?}");
        assert!(r.loss.is_finite());
    }
    assert!(all_finite(&t.student) && all_finite(&t.teacher1) && all_finite(&t.teacher2));
}

#[test]
fn supervised_loss_falls_on_a_fixed_batch() {
    let g = gpu();
    let b = batch(&g, 2, 2, &[16, 16], 4, 6);
    let cfg = AdmtConfig {
        base_lr: 0.05,
        dropout: false,
        ..cfg_2d()
    };
    let mut t = AdmtTrainer::init(&g, UNET, cfg, 11).unwrap();
    let first = t.step(&b.inputs()).unwrap().loss_sup;
    let mut last = first;
    for _ in 0..7 {
        last = t.step(&b.inputs()).unwrap().loss_sup;
    }
    assert!(last < 0.9 * first, "supervised loss {first} → {last}");
}

/// Save after one step, load, and both trainers take the next step to the same bits; two
/// saves of one state are byte-identical, and so is the save of the reloaded trainer.
#[test]
fn resume_is_exact_and_saves_deterministic_bytes() {
    let g = gpu();
    let b = batch(&g, 2, 2, &[16, 16], 4, 12);
    let cfg = AdmtConfig {
        max_period: 1,
        ..cfg_2d()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut a = AdmtTrainer::init(&g, UNET, cfg, 31).unwrap();
    a.step(&b.inputs()).unwrap();
    let (p1, p2, p3) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
        dir.path().join("c.safetensors"),
    );
    a.save_resume(&p1).unwrap();
    a.save_resume(&p2).unwrap();
    let bytes = std::fs::read(&p1).unwrap();
    assert_eq!(bytes, std::fs::read(&p2).unwrap(), "two saves differ");
    let mut r = AdmtTrainer::load_resume(&g, &p1).unwrap();
    assert_eq!(r.resume_state(), a.resume_state());
    r.save_resume(&p3).unwrap();
    assert_eq!(
        bytes,
        std::fs::read(&p3).unwrap(),
        "the reloaded trainer saves other bytes"
    );
    // step 1 updates teacher 2 with CutMix: the RNG, momentum and schedule all matter
    let (la, lr) = (a.step(&b.inputs()).unwrap(), r.step(&b.inputs()).unwrap());
    assert!(la.cutmix);
    assert_eq!(la, lr);
    assert_eq!(bits(&a.student), bits(&r.student));
    assert_eq!(bits(&a.teacher1), bits(&r.teacher1));
    assert_eq!(bits(&a.teacher2), bits(&r.teacher2));
    assert_eq!(a.resume_state(), r.resume_state());
}

/// While teacher 2 is updated the coin decides CutMix (`coin < cutmix_prob`): a coin at the
/// probability keeps the weak view unmixed even with a draw given; a coin below it without a
/// draw is one line, not a silent unmixed step.
#[test]
fn the_cutmix_coin_decides_and_a_missing_draw_is_an_error() {
    use ssnet::admt::cutmix::CutMix;
    use ssnet::admt::{StepDraws, Teacher, TeacherSchedule};
    let g = gpu();
    let b = batch(&g, 2, 2, &[16, 16], 4, 5);
    let mut t = AdmtTrainer::init(&g, UNET, cfg_2d(), 9).unwrap();
    t.schedule = TeacherSchedule {
        updated: Teacher::Two,
        counter: 0,
        period: 5,
        max_period: 5,
    };
    let draw = CutMix::from_centres(vec![1, 0], 0.5, &[vec![8, 8], vec![8, 8]], &[16, 16]);
    let draws = |coin: f64, cutmix: Option<CutMix>| StepDraws {
        teacher_seed: 0,
        student_seed: 0,
        coin: Some(coin),
        cutmix,
    };
    let r = t
        .step_with(&b.inputs(), &draws(1.0, Some(draw.clone())))
        .unwrap();
    assert!(!r.cutmix, "a coin of 1.0 is not below cutmix_prob 1.0");
    let r = t.step_with(&b.inputs(), &draws(0.3, Some(draw))).unwrap();
    assert!(r.cutmix);
    let e = t
        .step_with(&b.inputs(), &draws(0.3, None))
        .expect_err("a missing draw")
        .to_string();
    assert!(e.contains("no CutMix draw") && !e.contains('\n'), "{e}");
}
