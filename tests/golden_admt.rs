//! Golden parity with the OFFICIAL AD-MT code (github.com/ZhenZHAO/AD-MT): the fixtures of
//! `SSNET_ADMT_GOLDEN_DIR` (default `tests/fixtures`, the committed set), made by
//! `tools/admt_golden.py` from the official modules in float64 and float32. One test per
//! fixture, named `admt__<stem>`; the same rule as SS-Net's golden tests
//! (`ssnet::golden::parity`): each tensor within max(the README's tolerance, K = 10 × the
//! reference's own float32 error on its group).
//!
//! The fixtures name their starting weights by seed (`splitmix-uniform-v1`,
//! `ssnet::golden::init`); every test first proves that it rebuilt them bit for bit from the
//! summaries the fixture stores. Label maps are compared exactly, except where the decision
//! is a near tie in float64 (a margin below [`TIE`]) or the reference's own float32 run also
//! decides otherwise: those are counted and reported.
#![allow(non_snake_case)]

use rand::SeedableRng;
use ssnet::admt::cutmix::CutMix;
use ssnet::admt::step::StepDraws;
use ssnet::admt::{AdmtConfig, AdmtInputs, AdmtTrainer, Teacher, TeacherSchedule, UnsupLoss};
use ssnet::autograd::backward;
use ssnet::golden::{admt_golden_dir, hashed_init, summary, Fixture, Parity, K};
use ssnet::gpu::Gpu;
use ssnet::nn::{spec, Arch, Model, ModelConfig, Pass, Variant};
use ssnet::ops::{self, admt as adops, DiceKind, DiceTarget, IGNORE};
use ssnet::reference::admt::Fusion;
use ssnet::tensor::Tensor;
use std::sync::Arc;

/// Tolerances of `../shared/golden/README.md` (widened to K × the reference's float32 error
/// where that is larger).
mod tol {
    pub const OP: f64 = 1e-5;
    pub const LOSS: f64 = 1e-4;
    pub const SUMMARY: f64 = 1e-3;
    pub const SECOND_ITER: f64 = 5e-3;
}

/// A decision whose float64 margin is below this is a tie for a float32 engine.
const TIE: f64 = 1e-5;

fn gpu() -> Arc<Gpu> {
    Gpu::shared().unwrap_or_else(|e| panic!("golden tests need a GPU adapter: {e}"))
}

fn load(stem: &str) -> Fixture {
    Fixture::load_in(&admt_golden_dir(), "admt", stem).unwrap_or_else(|e| panic!("{e}"))
}

fn f32t(fx: &Fixture, name: &str) -> Tensor {
    let (v, s) = fx.f32(name).unwrap();
    Tensor::from_f32(&gpu(), &v, &s).unwrap()
}

/// A U8 map as u32, 255 read as [`IGNORE`].
fn u32_of(v: &[u8]) -> Vec<u32> {
    v.iter()
        .map(|&b| if b == 255 { IGNORE } else { b as u32 })
        .collect()
}

fn u32t(fx: &Fixture, name: &str) -> Tensor {
    let (v, s) = fx.u8(name).unwrap();
    Tensor::from_u32(&gpu(), &u32_of(&v), &s).unwrap()
}

fn cfg_u(fx: &Fixture, key: &str) -> u64 {
    fx.cfg_f64(key).unwrap() as u64
}

fn model_config(fx: &Fixture) -> ModelConfig {
    let arch = match fx.cfg_str("arch").unwrap().as_str() {
        "vnet" => Arch::VNet,
        "unet" => Arch::UNet,
        a => panic!("{}: unknown arch {a}", fx.path.display()),
    };
    ModelConfig {
        arch,
        in_channels: 1,
        num_classes: cfg_u(fx, "num_classes") as usize,
    }
}

/// The heads-free network of `role` (its seed in the config), after checking that the
/// rebuilt starting weights are the fixture's (`init.<role>.<key>` summaries) and that the
/// official state_dict names are ours.
fn hashed_model(fx: &Fixture, role: &str, seed_key: &str) -> Model {
    let mcfg = model_config(fx);
    let specs = spec::specs_of(mcfg, Variant::Admt).unwrap();
    let values = hashed_init(&specs, cfg_u(fx, seed_key)).unwrap();
    let prefix = format!("init.{role}.");
    let stored: Vec<String> = fx
        .names()
        .into_iter()
        .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
        .collect();
    assert!(
        !stored.is_empty(),
        "{}: no {prefix}* summaries",
        fx.path.display()
    );
    for key in &stored {
        let ours = values
            .get(key)
            .unwrap_or_else(|| panic!("official tensor {key} is not in our AD-MT {:?}", mcfg.arch));
        let want = fx.f32(&format!("{prefix}{key}")).unwrap().0;
        let got = summary(ours);
        let scale = (want[2] as f64).max(1.0);
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let ok = if i < 3 {
                (g - w as f64).abs() <= 1e-6 * scale
            } else {
                g as f32 == w
            };
            assert!(ok, "{role} {key}: rebuilt starting weights differ from the generator's (summary entry {i}: {g} vs {w})");
        }
    }
    for key in values.keys() {
        assert!(
            stored.contains(key),
            "our tensor {key} is not in the official network"
        );
    }
    Model::from_values_as(&gpu(), mcfg, Variant::Admt, specs, values).unwrap()
}

/// Compare a label map with the fixture's: a mismatch passes only at a float64 near tie
/// (`tie(i)`) or where the reference's float32 run decides otherwise too; both are noted.
fn check_map(p: &mut Parity, fx: &Fixture, key: &str, ours: &[u32], tie: &dyn Fn(usize) -> bool) {
    let want = u32_of(&fx.u8(key).unwrap().0);
    let ref32 = fx
        .u8(&format!("f32.{key}"))
        .map(|t| u32_of(&t.0))
        .unwrap_or_else(|_| want.clone());
    if ours.len() != want.len() {
        p.fail(format!(
            "{key}: {} values, the fixture has {}",
            ours.len(),
            want.len()
        ));
        return;
    }
    let ref_miss = ref32.iter().zip(&want).filter(|(a, b)| a != b).count();
    let (mut ties, mut shared, mut bad) = (0, 0, vec![]);
    for i in 0..want.len() {
        if ours[i] == want[i] {
            continue;
        }
        if ref32[i] != want[i] {
            shared += 1;
        } else if tie(i) {
            ties += 1;
        } else {
            bad.push(i);
        }
    }
    if ties + shared > 0 || ref_miss > 0 {
        p.note(format!("{key}: {ties} near-tie and {shared} shared mismatches (the reference's float32 run: {ref_miss}) of {}", want.len()));
    }
    if let Some(&i) = bad.first() {
        p.fail(format!(
            "{key}: {} decisions differ away from any tie (first at {i}: ours {}, reference {})",
            bad.len(),
            ours[i],
            want[i]
        ));
    }
}

/// Mismatches of a map produced deep inside a step (no margins stored): at most K times the
/// reference's own float32 mismatches (at least K), all reported.
fn check_step_map(p: &mut Parity, fx: &Fixture, key: &str, ours: &[u32]) {
    let want = u32_of(&fx.u8(key).unwrap().0);
    let ref32 = fx
        .u8(&format!("f32.{key}"))
        .map(|t| u32_of(&t.0))
        .unwrap_or_else(|_| want.clone());
    let ours_miss = ours.iter().zip(&want).filter(|(a, b)| a != b).count();
    let ref_miss = ref32.iter().zip(&want).filter(|(a, b)| a != b).count();
    let allowed = (K * ref_miss.max(1) as f64) as usize;
    println!("{key}: ours {ours_miss} / reference float32 {ref_miss} of {} voxels decided otherwise than float64 (allowed {allowed})", want.len());
    if ours_miss > allowed {
        p.fail(format!("{key}: {ours_miss} voxels decided otherwise than the float64 reference, over {allowed} = K × max(1, the reference float32 run's {ref_miss})"));
    }
}

// ------------------------------------------------------------------------------------------
// networks
// ------------------------------------------------------------------------------------------

fn model_fixture(stem: &str) {
    let fx = load(stem);
    let mut p = Parity::new(&fx);
    let model = hashed_model(&fx, "net", "net");
    let x = f32t(&fx, "x");
    let y = u32t(&fx, "y");
    let logits = model.logits(&x, Pass::train(None)).unwrap();
    let ce = ops::cross_entropy(&logits, &y).unwrap();
    let dice = ops::softmax_dice(&logits, &y, DiceKind::MeanClassesAdmt).unwrap();
    let loss = ops::lincomb(&ce, 0.5, &dice.loss, 0.5).unwrap();
    p.tensor("logits", "logits", &logits.to_f32().unwrap(), tol::LOSS);
    for (key, t) in [("loss", &loss), ("loss_ce", &ce), ("loss_dice", &dice.loss)] {
        p.scalar("loss terms", key, t.item().unwrap() as f64, tol::LOSS);
    }
    let grads = backward(&loss).unwrap();
    for (name, param) in model.params() {
        let key = format!("grad.{name}");
        match grads.get(param) {
            Some(g) => p.tensor(
                "parameter gradients",
                &key,
                &g.to_f32().unwrap(),
                tol::SUMMARY,
            ),
            None => p.fail(format!("{key}: no gradient here")),
        }
    }
    for (name, t) in model.buffers() {
        let key = format!("after.{name}");
        p.tensor(&key, &key, &t.to_f32().unwrap(), tol::SUMMARY);
    }
    let el = model.logits(&x, Pass::EVAL).unwrap();
    p.tensor(
        "eval_logits",
        "eval_logits",
        &el.to_f32().unwrap(),
        tol::LOSS,
    );
    p.finish();
}

#[test]
fn admt__vnet() {
    model_fixture("vnet");
}

#[test]
fn admt__unet2d() {
    model_fixture("unet2d");
}

// ------------------------------------------------------------------------------------------
// fusion, compromise, CutMix, losses, EMA
// ------------------------------------------------------------------------------------------

/// Per voxel of `p` [N, C, S...] the gap between its two largest values.
fn top_gap(p: &[f32], shape: &[usize]) -> Vec<f64> {
    let (n, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    let mut gap = vec![0.0; n * s];
    for b in 0..n {
        for v in 0..s {
            let mut vals: Vec<f64> = (0..c).map(|k| p[(b * c + k) * s + v] as f64).collect();
            vals.sort_by(|a, b| b.total_cmp(a));
            gap[b * s + v] = vals[0] - vals.get(1).copied().unwrap_or(f64::NEG_INFINITY);
        }
    }
    gap
}

fn softmax_f64(z: &[f32], shape: &[usize]) -> Vec<f32> {
    let (n, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    let mut out = vec![0.0f32; z.len()];
    for b in 0..n {
        for v in 0..s {
            let at = |k: usize| (b * c + k) * s + v;
            let m = (0..c)
                .map(|k| z[at(k)] as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let t: f64 = (0..c).map(|k| (z[at(k)] as f64 - m).exp()).sum();
            for k in 0..c {
                out[at(k)] = ((z[at(k)] as f64 - m).exp() / t) as f32;
            }
        }
    }
    out
}

#[test]
fn admt__fusion() {
    let fx = load("fusion");
    let mut p = Parity::new(&fx);
    for pre in ["c4.", "c2."] {
        let (p1v, shape) = fx.f32(&format!("{pre}p1")).unwrap();
        let p2v = fx.f32(&format!("{pre}p2")).unwrap().0;
        let (zw, _) = fx.f32(&format!("{pre}z_w")).unwrap();
        let tau = fx.cfg_f64(&format!("{pre}temperature")).unwrap() as f32;
        let theta = fx.cfg_f64(&format!("{pre}threshold")).unwrap();
        let (p1, p2) = (
            f32t(&fx, &format!("{pre}p1")),
            f32t(&fx, &format!("{pre}p2")),
        );
        let maps = adops::teacher_fuse(&p1, &p2, Fusion::Entropy, tau).unwrap();
        let (s_label, s_conf) = adops::student_max(&f32t(&fx, &format!("{pre}z_w"))).unwrap();
        let target = adops::compromise_targets(&maps, &s_label, &s_conf, theta as f32).unwrap();
        let g = format!("{pre} confidences");
        p.tensor(
            &g,
            &format!("{pre}conf"),
            &maps.conf.to_f32().unwrap(),
            tol::OP,
        );
        p.tensor(
            &g,
            &format!("{pre}student_conf"),
            &s_conf.to_f32().unwrap(),
            tol::OP,
        );
        // Margins of each decision, from the float64 values.
        let fused = fx.f32(&format!("{pre}fused")).unwrap().0;
        let q_gap = top_gap(&fused, &shape);
        let (g1, g2) = (top_gap(&p1v, &shape), top_gap(&p2v, &shape));
        let s_gap = top_gap(&softmax_f64(&zw, &shape), &shape);
        let conf = fx.f32(&format!("{pre}conf")).unwrap().0;
        let sconf = fx.f32(&format!("{pre}student_conf")).unwrap().0;
        let tconf = fx.f32(&format!("{pre}target_conf")).unwrap().0;
        let any_tie = |i: usize| {
            q_gap[i] < TIE
                || g1[i] < TIE
                || g2[i] < TIE
                || s_gap[i] < TIE
                || (sconf[i] as f64 - conf[i] as f64).abs() < TIE
                || (tconf[i] as f64 - theta).abs() < TIE
        };
        check_map(
            &mut p,
            &fx,
            &format!("{pre}label"),
            &maps.label.to_u32().unwrap(),
            &|i| q_gap[i] < TIE,
        );
        check_map(
            &mut p,
            &fx,
            &format!("{pre}conflict"),
            &maps.conflict.to_u32().unwrap(),
            &|i| g1[i] < TIE || g2[i] < TIE,
        );
        check_map(
            &mut p,
            &fx,
            &format!("{pre}student_label"),
            &s_label.to_u32().unwrap(),
            &|i| s_gap[i] < TIE,
        );
        check_map(
            &mut p,
            &fx,
            &format!("{pre}target"),
            &target.to_u32().unwrap(),
            &any_tie,
        );
    }
    p.finish();
}

/// A CutMix draw from the fixture (`<pre>perm`, config `<pre>lambda`, `<pre>centres`), after
/// checking that our box rule gives its `<pre>boxes`.
fn cutmix_draw(fx: &Fixture, pre: &str, dims: &[usize]) -> CutMix {
    let perm: Vec<usize> = fx
        .u8(&format!("{pre}perm"))
        .unwrap()
        .0
        .iter()
        .map(|&v| v as usize)
        .collect();
    let lambda = fx.cfg_f64(&format!("{pre}lambda")).unwrap();
    let (c, cs) = fx.u8(&format!("{pre}centres")).unwrap();
    let n = perm.len();
    assert_eq!(cs, vec![dims.len(), n], "{pre}centres shape");
    let centres: Vec<Vec<usize>> = c
        .chunks(n)
        .map(|a| a.iter().map(|&v| v as usize).collect())
        .collect();
    let draw = CutMix::from_centres(perm, lambda, &centres, dims);
    let (b, _) = fx.u8(&format!("{pre}boxes")).unwrap();
    let a = dims.len();
    for (i, bx) in draw.boxes.iter().enumerate() {
        for (ax, &(lo, hi)) in bx.iter().enumerate() {
            let (want_lo, want_hi) = (b[ax * n + i] as usize, b[(a + ax) * n + i] as usize);
            assert_eq!((lo, hi), (want_lo, want_hi), "{pre} sample {i} axis {ax}: our box from λ and the centre differs from the official one");
        }
    }
    draw
}

#[test]
fn admt__cutmix() {
    let fx = load("cutmix");
    let mut p = Parity::new(&fx);
    for pre in ["d2.", "d3."] {
        let shape = fx.shape(&format!("{pre}image")).unwrap();
        let dims = &shape[2..];
        let draw = cutmix_draw(&fx, pre, dims);
        let u = draw.perm.len();
        let boxes =
            Tensor::from_u32(&gpu(), &adops::cutmix_boxes(&draw).unwrap(), &[u * 7]).unwrap();
        let mix = |t: &Tensor| adops::cutmix(t, &boxes, dims.len()).unwrap();
        let image = mix(&f32t(&fx, &format!("{pre}image"))).to_f32().unwrap();
        let conf = mix(&f32t(&fx, &format!("{pre}conf"))).to_f32().unwrap();
        let label = mix(&u32t(&fx, &format!("{pre}label"))).to_u32().unwrap();
        let conflict = mix(&u32t(&fx, &format!("{pre}conflict"))).to_u32().unwrap();
        let exact_f = |key: &str, got: &[f32]| -> Result<(), String> {
            let want = fx.f32(key).unwrap().0;
            (got == want.as_slice())
                .then_some(())
                .ok_or(format!("{key}: pasted values differ"))
        };
        let exact_u = |key: &str, got: &[u32]| -> Result<(), String> {
            let want = u32_of(&fx.u8(key).unwrap().0);
            (got == want.as_slice())
                .then_some(())
                .ok_or(format!("{key}: pasted values differ"))
        };
        p.exact(exact_f(&format!("{pre}mixed_image"), &image));
        p.exact(exact_f(&format!("{pre}mixed_conf"), &conf));
        p.exact(exact_u(&format!("{pre}mixed_label"), &label));
        p.exact(exact_u(&format!("{pre}mixed_conflict"), &conflict));
    }
    p.finish();
}

#[test]
fn admt__losses() {
    let fx = load("losses");
    let mut p = Parity::new(&fx);
    for case in ["masked_ce", "masked_dice", "sup3d", "sup2d"] {
        let z = f32t(&fx, &format!("{case}.z")).with_grad();
        let (t, ts) = fx.u8(&format!("{case}.target")).unwrap();
        let mut t = u32_of(&t);
        if case == "masked_dice" {
            let (m, _) = fx.u8(&format!("{case}.mask")).unwrap();
            for (v, &ign) in t.iter_mut().zip(&m) {
                if ign == 1 {
                    *v = IGNORE;
                }
            }
        }
        let target = Tensor::from_u32(&gpu(), &t, &ts).unwrap();
        let loss = match case {
            "masked_ce" => ops::masked_cross_entropy(&z, &target).unwrap(),
            "masked_dice" => ops::dice_loss(
                &ops::softmax(&z).unwrap(),
                DiceTarget::Labels(&target),
                DiceKind::MeanClassesAdmt,
            )
            .unwrap(),
            _ => {
                let ce = ops::cross_entropy(&z, &target).unwrap();
                let dice = ops::softmax_dice(&z, &target, DiceKind::MeanClassesAdmt).unwrap();
                ops::lincomb(&ce, 0.5, &dice.loss, 0.5).unwrap()
            }
        };
        p.scalar(
            case,
            &format!("{case}.loss"),
            loss.item().unwrap() as f64,
            tol::OP,
        );
        let grads = backward(&loss).unwrap();
        let g = grads.get(&z).expect("a gradient for the logits");
        p.tensor(
            &format!("g.{case}"),
            &format!("g.{case}"),
            &g.to_f32().unwrap(),
            tol::OP,
        );
    }
    p.finish();
}

#[test]
fn admt__ema() {
    let fx = load("ema");
    let mut p = Parity::new(&fx);
    let student = hashed_model(&fx, "student", "student");
    let teacher = hashed_model(&fx, "teacher", "teacher");
    let g = cfg_u(&fx, "global_step");
    let alpha = ssnet::admt::schedule::ema_alpha(
        2 * g,
        cfg_u(&fx, "rampup"),
        fx.cfg_f64("ema_decay").unwrap(),
    );
    assert_eq!(
        alpha,
        fx.cfg_f64("alpha").unwrap(),
        "our EMA decay at step {} differs from the official",
        2 * g
    );
    ssnet::admt::ema_teacher(&teacher, &student, alpha as f32).unwrap();
    for (name, t) in teacher.params().iter().chain(teacher.buffers()) {
        let key = format!("after.{name}");
        p.tensor("teacher after the EMA", &key, &t.to_f32().unwrap(), tol::OP);
    }
    p.finish();
}

// ------------------------------------------------------------------------------------------
// two complete iterations
// ------------------------------------------------------------------------------------------

fn iteration_trainer(fx: &Fixture) -> AdmtTrainer {
    let mcfg = model_config(fx);
    let base = if mcfg.arch == Arch::VNet {
        AdmtConfig::la()
    } else {
        AdmtConfig::acdc()
    };
    let period = cfg_u(fx, "alternate_period") as u32;
    let cfg = AdmtConfig {
        base_lr: fx.cfg_f64("base_lr").unwrap(),
        momentum: fx.cfg_f64("momentum").unwrap() as f32,
        weight_decay: fx.cfg_f64("weight_decay").unwrap() as f32,
        max_iterations: cfg_u(fx, "max_iterations"),
        unsup_weight: fx.cfg_f64("consistency").unwrap(),
        rampup: cfg_u(fx, "consistency_rampup"),
        ema_cap: fx.cfg_f64("ema_decay").unwrap(),
        threshold: fx.cfg_f64("conf_threshold").unwrap() as f32,
        max_period: period,
        cutmix_prob: fx.cfg_f64("cutmix_prob").unwrap(),
        fusion: Fusion::Entropy,
        temperature: fx.cfg_f64("temperature").unwrap() as f32,
        unsup: match fx.cfg_str("unsup_loss").unwrap().as_str() {
            "ce" => UnsupLoss::MaskedCe,
            "dice" => UnsupLoss::MaskedDice,
            o => panic!("unknown unsup_loss {o}"),
        },
        dropout: false,
        ..base
    };
    let mut t = AdmtTrainer::new(
        hashed_model(fx, "student", "student"),
        hashed_model(fx, "teacher1", "teacher1"),
        hashed_model(fx, "teacher2", "teacher2"),
        cfg,
        rand_pcg::Pcg32::seed_from_u64(0),
    )
    .unwrap();
    t.iter = cfg_u(fx, "start_iteration");
    t.lr = fx.cfg_f64("lr").unwrap() as f32;
    t.schedule = TeacherSchedule {
        updated: Teacher::One,
        counter: 0,
        period,
        max_period: period,
    };
    t.keep_targets = true;
    t
}

/// A convolution bias that a BatchNorm follows (`X.i.bias` beside `X.(i+1).running_mean`):
/// its gradient is zero in exact arithmetic, so its update is weight decay plus float32
/// noise, and the float32 error of that noise would set a yardstick for every other weight.
/// Those biases form their own group.
fn feeds_batchnorm(model: &Model, name: &str) -> bool {
    let Some(prefix) = name.strip_suffix(".bias") else {
        return false;
    };
    let Some((head, idx)) = prefix.rsplit_once('.') else {
        return false;
    };
    let Ok(i) = idx.parse::<usize>() else {
        return false;
    };
    model
        .buffers()
        .contains_key(&format!("{head}.{}.running_mean", i + 1))
}

/// Two official iterations: the loss terms at the README's 1e-4 (5e-3 in the second), the
/// compromise target, and after each step the student's weight changes with its momentum
/// buffers (one group: a weight's change is lr × its momentum; the biases before BatchNorm
/// apart, see [`feeds_batchnorm`]), its running statistics and
/// both teachers' weights and running statistics (1e-3, 5e-3 in the second), or K times the
/// reference's own float32 error on the group, whichever is larger.
fn iteration_fixture(stem: &str) {
    let fx = load(stem);
    let mut p = Parity::new(&fx);
    let mut trainer = iteration_trainer(&fx);
    for it in 0..2 {
        let (tol_loss, tol_sum) = if it == 0 {
            (tol::LOSS, tol::SUMMARY)
        } else {
            (tol::SECOND_ITER, tol::SECOND_ITER)
        };
        let pre = format!("it{it}.");
        let weak = f32t(&fx, &format!("{pre}weak"));
        let dims = weak.shape()[2..].to_vec();
        let cut = fx.has(&format!("{pre}cutmix.perm"));
        let updated = if cut { Teacher::Two } else { Teacher::One };
        assert_eq!(
            trainer.schedule.updated, updated,
            "{pre}: the official run updates {updated:?} here"
        );
        let coin = fx.config.get(format!("{pre}coin")).and_then(|v| v.as_f64());
        let draws = StepDraws {
            teacher_seed: 0,
            student_seed: 0,
            coin,
            cutmix: cut.then(|| cutmix_draw(&fx, &format!("{pre}cutmix."), &dims)),
        };
        let before = trainer.student.state().unwrap();
        let losses = trainer
            .step_with(
                &AdmtInputs {
                    labeled: &f32t(&fx, &format!("{pre}labeled")),
                    labels: &u32t(&fx, &format!("{pre}labels")),
                    weak: &weak,
                    strong: &f32t(&fx, &format!("{pre}strong")),
                },
                &draws,
            )
            .unwrap();
        assert_eq!(losses.cutmix, cut);
        let group = format!("{pre} loss terms");
        for (name, got) in [
            ("loss", losses.loss),
            ("loss_sup", losses.loss_sup),
            ("loss_ce", losses.loss_ce),
            ("loss_dice", losses.loss_dice),
            ("loss_unsup", losses.loss_unsup),
            ("unsup_weight", losses.unsup_weight),
        ] {
            p.scalar(&group, &format!("{pre}{name}"), got as f64, tol_loss);
        }
        let target = trainer
            .last_target
            .as_ref()
            .expect("kept target")
            .to_u32()
            .unwrap();
        check_step_map(&mut p, &fx, &format!("{pre}target"), &target);
        let after = trainer.student.state().unwrap();
        let update = |name: &str| {
            if feeds_batchnorm(&trainer.student, name) {
                format!("{pre} student update of convolution biases before BatchNorm")
            } else {
                format!("{pre} student update (weight changes, momentum buffers)")
            }
        };
        for (name, v) in &after {
            let key = format!("{pre}after.{name}");
            if trainer.student.buffers().contains_key(name) {
                p.tensor(&key, &key, v, tol_sum);
            } else {
                p.change(&update(name), &key, &before[name], v, tol_sum);
            }
        }
        for (name, t) in trainer.momentum_buffers() {
            p.tensor(
                &update(name),
                &format!("{pre}momentum.{name}"),
                &t.to_f32().unwrap(),
                tol_sum,
            );
        }
        for (role, which) in [("teacher1", Teacher::One), ("teacher2", Teacher::Two)] {
            let teacher = trainer.teacher(which);
            for (name, t) in teacher.params() {
                p.tensor(
                    &format!("{pre} {role} weights"),
                    &format!("{pre}{role}.{name}"),
                    &t.to_f32().unwrap(),
                    tol_sum,
                );
            }
            for (name, t) in teacher.buffers() {
                let key = format!("{pre}{role}.{name}");
                p.tensor(&key, &key, &t.to_f32().unwrap(), tol_sum);
            }
        }
    }
    p.finish();
}

#[test]
fn admt__iteration3d() {
    iteration_fixture("iteration3d");
}

#[test]
fn admt__iteration2d() {
    iteration_fixture("iteration2d");
}

/// Every fixture in the folder has a test here, and every test its fixture.
#[test]
fn coverage() {
    let dir = admt_golden_dir().join("admt");
    let mut stems: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (set SSNET_ADMT_GOLDEN_DIR)", dir.display()))
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".safetensors")
                .map(str::to_string)
        })
        .collect();
    stems.sort();
    let tested = [
        "cutmix",
        "ema",
        "fusion",
        "iteration2d",
        "iteration3d",
        "losses",
        "unet2d",
        "vnet",
    ];
    assert_eq!(
        stems,
        tested,
        "fixtures in {} against the tests of this file",
        dir.display()
    );
}
