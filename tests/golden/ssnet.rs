// Golden tests of the networks and of SS-Net's objective: models/ vnet, unet2d; ssnet/ vat3d,
// vat2d, contrastive_memory_loss, feature_memory_update, iteration3d, iteration2d.
// Included by tests/golden.rs.

mod golden_model_support {
    use ssnet::golden::{golden_dir, Fixture, Parity};
    use ssnet::gpu::Gpu;
    use ssnet::nn::Model;
    use ssnet::tensor::Tensor;
    use std::sync::Arc;

    pub fn gpu() -> Arc<Gpu> {
        Gpu::shared().unwrap_or_else(|e| panic!("golden tests need a GPU adapter: {e}"))
    }

    /// The model a fixture starts from (its config's "init", e.g. models/vnet_init).
    pub fn init_model(fx: &Fixture) -> Model {
        let init = fx.config.get("init").and_then(|v| v.as_str()).unwrap_or_else(|| panic!("{}: no init in config", fx.path.display()));
        let path = golden_dir().join(format!("{init}.safetensors"));
        Model::load(&gpu(), &path).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn f32t(fx: &Fixture, name: &str) -> Tensor {
        let (v, s) = fx.f32(name).unwrap();
        Tensor::from_f32(&gpu(), &v, &s).unwrap()
    }

    pub fn u32t(fx: &Fixture, name: &str) -> Tensor {
        let (v, s) = fx.u8(name).unwrap();
        Tensor::from_u32(&gpu(), &v.into_iter().map(u32::from).collect::<Vec<_>>(), &s).unwrap()
    }

    /// Labels of the first `l` samples.
    pub fn labels_first(fx: &Fixture, name: &str, l: usize) -> Tensor {
        let (v, s) = fx.u8(name).unwrap();
        let per: usize = s[1..].iter().product();
        let mut shape = s.clone();
        shape[0] = l;
        Tensor::from_u32(&gpu(), &v[..l * per].iter().map(|&b| b as u32).collect::<Vec<_>>(), &shape).unwrap()
    }

    /// Compare every `<prefix><name>` entry of the fixture (BatchNorm running statistics) with
    /// the model's tensor `name`, each against its own float32 error: a running mean's float32
    /// error grows as the mean nears zero against the spread of the values it averages, which
    /// varies by orders of magnitude between layers (the reference's float32 run misses some
    /// means by 90%), so one group's largest would let the worst-conditioned layer loosen
    /// every other.
    pub fn check_prefixed(fx: &Fixture, prefix: &str, model: &Model, tol: f64, p: &mut Parity) {
        let mut n = 0;
        for key in fx.names() {
            let Some(name) = key.strip_prefix(prefix) else { continue };
            n += 1;
            match model.get(name) {
                Ok(t) => p.tensor(&key, &key, &t.to_f32().unwrap(), tol),
                Err(e) => p.fail(format!("{key}: {e}")),
            }
        }
        if n == 0 {
            p.fail(format!("no '{prefix}' entries in {}", fx.path.display()));
        }
    }

    /// Our memory's last rankings, for reporting a flip (see ssnet::golden::prototypes).
    pub fn ranking(mem: &ssnet::ssnet::PrototypeMemory, c: usize) -> Option<ssnet::golden::Ranking> {
        mem.rankings[c].as_ref().map(|r| ssnet::golden::Ranking {
            candidates: r.candidates.to_f32().unwrap(),
            scores: r.scores.clone(),
            kept: r.kept.clone(),
        })
    }

    /// Every class's memory against the fixture's `<prefix>memory_<c>`.
    pub fn check_memory(prefix: &str, mem: &ssnet::ssnet::PrototypeMemory, group: &str, tol: f64, p: &mut Parity) {
        for c in 0..mem.entries.len() {
            let key = format!("{prefix}memory_{c}");
            let ours = mem.entries[c].as_ref().map(|t| t.to_f32().unwrap());
            let dim = mem.entries[c].as_ref().map_or(1, |t| t.shape()[1]);
            p.memory(group, &key, ours.as_deref(), dim, ranking(mem, c).as_ref(), tol);
        }
    }
}

/// A model fixture: train-mode forward (logits, embedding), the cross-entropy and its parameter
/// gradients (one group), the running statistics after the forward (each its own), the eval-mode
/// forward.
fn model_fixture(stem: &str) {
    use golden_model_support::*;
    use ssnet::nn::Pass;
    let fx = Fixture::load("models", stem).unwrap();
    let mut p = ssnet::golden::Parity::new(&fx);
    let model = init_model(&fx);
    let x = f32t(&fx, "x");
    let (logits, emb) = model.forward(&x, Pass::train(None)).unwrap();
    let loss = ssnet::ops::cross_entropy(&logits, &u32t(&fx, "labels")).unwrap();
    p.tensor("logits", "logits", &logits.to_f32().unwrap(), tol::LOSS);
    p.tensor("embedding", "embedding", &emb.to_f32().unwrap(), tol::LOSS);
    p.scalar("loss", "loss", loss.item().unwrap() as f64, tol::LOSS);
    let grads = ssnet::autograd::backward(&loss).unwrap();
    let mut n = 0;
    for key in fx.names() {
        let Some(name) = key.strip_prefix("grad.") else { continue };
        n += 1;
        match model.params().get(name).and_then(|t| grads.get(t)) {
            Some(g) => p.tensor("parameter gradients", &key, &g.to_f32().unwrap(), tol::SUMMARY),
            None => p.fail(format!("{key}: no gradient for parameter {name}")),
        }
    }
    assert!(n > 0, "fixture has no gradients");
    check_prefixed(&fx, "after.", &model, tol::SUMMARY, &mut p);
    let (el, ee) = model.forward(&x, Pass::EVAL).unwrap();
    p.tensor("eval_logits", "eval_logits", &el.to_f32().unwrap(), tol::LOSS);
    p.tensor("eval_embedding", "eval_embedding", &ee.to_f32().unwrap(), tol::LOSS);
    p.finish();
}

#[test]
fn models__vnet() {
    model_fixture("vnet");
}

#[test]
fn models__unet2d() {
    model_fixture("unet2d");
}

/// VAT: d0, the adversarial direction, LDS, the running statistics, and LDS's parameter
/// gradients, all from our own VAT as the reference computes them. The direction amplifies
/// rounding (the reference's own float32 run misses its float64 direction by ~1e-2 in 3D, and
/// the parameter gradients through it), which the yardstick measures tensor by tensor.
fn vat_fixture(stem: &str) {
    use golden_model_support::*;
    use ssnet::nn::Pass;
    let fx = Fixture::load("ssnet", stem).unwrap();
    let mut p = ssnet::golden::Parity::new(&fx);
    let u = f32t(&fx, "rand_u");
    let cfg = ssnet::ssnet::vat::VatConfig { xi: fx.cfg_f64("xi").unwrap() as f32, eps: fx.cfg_f64("epi").unwrap() as f32 };
    let x = f32t(&fx, "x");
    // The full VAT (running statistics move in the clean pass, as the reference's).
    let model = init_model(&fx);
    let (lds, d_adv) = ssnet::ssnet::vat::vat_loss(&model, &x, &u, cfg, None).unwrap();
    let d0 = ssnet::ssnet::vat::l2_normalize_samples(&ssnet::ops::affine(&u, 1.0, -0.5).unwrap()).unwrap();
    p.tensor("d0", "d0", &d0.to_f32().unwrap(), tol::OP);
    p.tensor("d_adv", "d_adv", &d_adv.to_f32().unwrap(), tol::SUMMARY);
    p.scalar("lds", "lds", lds.item().unwrap() as f64, tol::LOSS);
    check_prefixed(&fx, "after.", &model, tol::SUMMARY, &mut p);
    let grads = ssnet::autograd::backward(&lds).unwrap();
    for key in fx.names() {
        let Some(name) = key.strip_prefix("grad.") else { continue };
        match model.params().get(name).and_then(|t| grads.get(t)) {
            Some(g) => p.tensor("parameter gradients", &key, &g.to_f32().unwrap(), tol::SUMMARY),
            None => p.fail(format!("{key}: no gradient for parameter {name}")),
        }
    }
    // The last forward alone, on the reference's own direction: LDS is smooth in the
    // direction, so this is held to the loss tolerance however ill-conditioned the direction.
    let d_ref = f32t(&fx, "d_adv");
    let lds_on_ref = ssnet::autograd::no_grad(|| {
        let pred = ssnet::ops::softmax(&model.forward(&x, Pass::frozen(None)).unwrap().0).unwrap();
        let xa = ssnet::ops::axpy(&x, cfg.eps, &d_ref).unwrap();
        let q = ssnet::ops::softmax(&model.forward(&xa, Pass::frozen(None)).unwrap().0).unwrap();
        let kind = if model.cfg.arch == ssnet::nn::Arch::VNet { ssnet::ops::DiceKind::Whole } else { ssnet::ops::DiceKind::MeanClasses };
        ssnet::ops::dice_loss(&q, ssnet::ops::DiceTarget::Soft(&pred), kind).unwrap().item().unwrap()
    });
    let (lw, lr) = (p.stored("lds").unwrap()[0] as f64, p.reference_f32("lds").unwrap()[0] as f64);
    p.scalar_vs("lds on the reference's direction", "lds on the reference's direction", lds_on_ref as f64, lw, lr, tol::LOSS);
    p.finish();
}

#[test]
fn ssnet__vat3d() {
    vat_fixture("vat3d");
}

#[test]
fn ssnet__vat2d() {
    vat_fixture("vat2d");
}

/// The selectors' starting values (`param.*`) written over an init model of the fixture's
/// class count.
fn model_with_selectors(fx: &Fixture) -> ssnet::nn::Model {
    use golden_model_support::*;
    let nc = fx.names().iter().filter(|k| k.starts_with("param.contrastive_class_selector_memory") && k.ends_with(".0.bias")).count();
    let init = if nc == 2 { "models/vnet_init" } else { "models/unet2d_init" };
    let model = ssnet::nn::Model::load(&gpu(), &ssnet::golden::golden_dir().join(format!("{init}.safetensors"))).unwrap();
    assert_eq!(model.cfg.num_classes, nc, "no init model with {nc} classes");
    for key in fx.names() {
        let Some(name) = key.strip_prefix("param.") else { continue };
        model.get(name).unwrap().write_f32(&fx.f32(&key).unwrap().0).unwrap();
    }
    model
}

fn memory_from(fx: &Fixture, nc: usize) -> ssnet::ssnet::PrototypeMemory {
    let mut m = ssnet::ssnet::PrototypeMemory::new(nc, 32, ssnet::ssnet::MemoryOrder::Ascending);
    for c in 0..nc {
        if fx.has(&format!("memory_{c}")) {
            m.entries[c] = Some(golden_model_support::f32t(fx, &format!("memory_{c}")));
        }
    }
    m
}

#[test]
fn ssnet__contrastive_memory_loss() {
    use golden_model_support::*;
    let fx = Fixture::load("ssnet", "contrastive_memory_loss").unwrap();
    let mut p = ssnet::golden::Parity::new(&fx);
    let model = model_with_selectors(&fx);
    // The loss and the feature gradient at the op tolerance; the selectors' parameter
    // gradients pass through Linear → BatchNorm1d → LeakyReLU → Linear → sigmoid → mean-one
    // renormalisation, a small model: the README's model tolerance (1e-4) applies there.
    let feats = f32t(&fx, "features").with_grad();
    let labels = u32t(&fx, "labels");
    let mem = memory_from(&fx, model.cfg.num_classes);
    let out = ssnet::ssnet::contrastive::contrastive_loss(&model, &feats, &labels, &mem).unwrap();
    p.scalar("loss", "loss", out.loss.item().unwrap() as f64, tol::OP);
    let grads = ssnet::autograd::backward(&out.loss).unwrap();
    p.tensor("gfeatures", "gfeatures", &grads.get(&feats).unwrap().to_f32().unwrap(), tol::OP);
    for key in fx.names() {
        let Some(name) = key.strip_prefix("grad.") else { continue };
        let p_t = model.params().get(name).unwrap();
        let g = match grads.get(p_t) {
            Some(g) => g.to_f32().unwrap(),
            // The memory selectors' gradient is exactly zero here (see ssnet::contrastive).
            None if out.zero_grad_params.iter().any(|z| name.starts_with(z.as_str())) => vec![0.0; p_t.numel()],
            None => panic!("no gradient for {name}"),
        };
        p.tensor("selector gradients", &key, &g, tol::LOSS);
    }
    check_prefixed(&fx, "after.", &model, tol::OP, &mut p);
    p.finish();
}

#[test]
fn ssnet__feature_memory_update() {
    use golden_model_support::*;
    let fx = Fixture::load("ssnet", "feature_memory_update").unwrap();
    let mut p = ssnet::golden::Parity::new(&fx);
    let model = model_with_selectors(&fx);
    let nc = model.cfg.num_classes;
    let per = fx.cfg_f64("elements_per_class").unwrap() as usize;
    let mut mem = ssnet::ssnet::PrototypeMemory::new(nc, per, ssnet::ssnet::MemoryOrder::Ascending);
    mem.keep_rankings = true;
    mem.update(&model, &f32t(&fx, "features"), &u32t(&fx, "labels")).unwrap();
    check_memory("", &mem, "memory", tol::OP, &mut p);
    p.finish();
}

/// A trainer for the iteration fixture, starting from its init weights.
fn iteration_trainer(fx: &Fixture) -> ssnet::ssnet::Trainer {
    use golden_model_support::*;
    let model = init_model(fx);
    let l = fx.cfg_f64("labeled_bs").unwrap() as usize;
    let mut cfg = if model.cfg.arch == ssnet::nn::Arch::VNet { ssnet::ssnet::TrainerConfig::la() } else { ssnet::ssnet::TrainerConfig::acdc() };
    cfg.labeled_bs = l;
    cfg.base_lr = fx.cfg_f64("lr").unwrap() as f32;
    cfg.momentum = fx.cfg_f64("momentum").unwrap() as f32;
    cfg.weight_decay = fx.cfg_f64("weight_decay").unwrap() as f32;
    cfg.consistency = fx.cfg_f64("consistency").unwrap();
    cfg.consistency_rampup = fx.cfg_f64("consistency_rampup").unwrap();
    cfg.vat_xi = fx.cfg_f64("vat_xi").unwrap() as f32;
    cfg.vat_eps = fx.cfg_f64("vat_epi").unwrap() as f32;
    cfg.dropout = false;
    ssnet::ssnet::Trainer::new(model, cfg)
}

/// Two reference iterations, every tensor at the README's tolerance (1e-4 loss terms and 1e-3
/// summaries in the first iteration, 5e-3 in the second) or K times the reference's own
/// float32 error on its group (the loss terms, the memory, and the update: the weight changes with the momentum buffers, which one step's rounding drives
/// together, since a weight's change is lr × its momentum buffer (plus what momentum carries
/// over); each running statistic against its own), whichever is larger: where BatchNorm
/// normalises a handful of values (VNet's deepest blocks at this size) the reference's own
/// float32 run parts from its float64 run, and so may ours, by as much.
fn iteration_fixture(stem: &str) {
    use golden_model_support::*;
    let fx = Fixture::load("ssnet", stem).unwrap();
    let mut p = ssnet::golden::Parity::new(&fx);
    let l = fx.cfg_f64("labeled_bs").unwrap() as usize;
    let mut trainer = iteration_trainer(&fx);
    trainer.memory.keep_rankings = true;
    for it in 0..2 {
        let tol_loss = if it == 0 { tol::LOSS } else { tol::SECOND_ITER };
        let tol_sum = if it == 0 { tol::SUMMARY } else { tol::SECOND_ITER };
        let before = trainer.model.state().unwrap();
        let x = f32t(&fx, &format!("it{it}.x"));
        let labels = labels_first(&fx, &format!("it{it}.labels"), l);
        let u = f32t(&fx, &format!("it{it}.rand_u"));
        let losses = trainer.step(&ssnet::ssnet::StepInputs { x: &x, labels: &labels, rand_u: Some(&u), seed: 0 }).unwrap();
        let s = &losses;
        let group = format!("it{it} loss terms");
        for (name, got) in [
            ("loss", s.loss),
            ("loss_dice", s.loss_dice),
            ("loss_ce", s.loss_ce),
            ("loss_lds", s.loss_lds),
            ("loss_cl_l", s.loss_cl_l),
            ("loss_cl_u", s.loss_cl_u),
            ("consistency_weight", s.consistency_weight),
        ] {
            p.scalar(&group, &format!("it{it}.{name}"), got as f64, tol_loss);
        }
        check_memory(&format!("it{it}."), &trainer.memory, &format!("it{it} memory"), tol_sum, &mut p);
        let after = trainer.model.state().unwrap();
        let update = format!("it{it} update (weight changes, momentum buffers)");
        for key in fx.names() {
            let Some(name) = key.strip_prefix(&format!("it{it}.after.")) else { continue };
            if name.contains("running_") {
                // Each against its own float32 error (see check_prefixed).
                p.tensor(&key, &key, &after[name], tol_sum);
            } else {
                p.change(&update, &key, &before[name], &after[name], tol_sum);
            }
        }
        let momentum = trainer.momentum_buffers();
        let want_m: Vec<String> = fx.names().into_iter().filter_map(|k| k.strip_prefix(&format!("it{it}.momentum.")).map(str::to_string)).collect();
        for name in &want_m {
            let key = format!("it{it}.momentum.{name}");
            match momentum.get(name) {
                Some(t) => p.tensor(&update, &key, &t.to_f32().unwrap(), tol_sum),
                None => p.fail(format!("{key}: no momentum buffer here")),
            }
        }
        for name in momentum.keys() {
            if !want_m.contains(name) {
                p.fail(format!("it{it}: parameter {name} was updated here but not in the reference"));
            }
        }
    }
    p.finish();
}

#[test]
fn ssnet__iteration3d() {
    iteration_fixture("iteration3d");
}

#[test]
fn ssnet__iteration2d() {
    iteration_fixture("iteration2d");
}
