// Golden tests of the engine's basic ops (issue: engine foundation). Included by
// tests/golden.rs. Each compares forward and gradients at the README's op tolerance.

mod golden_ops_support {
    use ssnet::autograd::backward_with;
    use ssnet::golden::Fixture;
    use ssnet::gpu::Gpu;
    use ssnet::tensor::Tensor;
    use std::sync::Arc;

    pub fn gpu() -> Arc<Gpu> {
        Gpu::shared().unwrap_or_else(|e| panic!("golden tests need a GPU adapter: {e}"))
    }

    pub fn load(fx: &Fixture, name: &str) -> Tensor {
        let (v, s) = fx.f32(name).unwrap();
        Tensor::from_f32(&gpu(), &v, &s).unwrap()
    }

    pub fn labels(fx: &Fixture, name: &str) -> Tensor {
        let (v, s) = fx.u8(name).unwrap();
        let v: Vec<u32> = v.into_iter().map(u32::from).collect();
        Tensor::from_u32(&gpu(), &v, &s).unwrap()
    }

    pub fn want(fx: &Fixture, name: &str) -> Vec<f32> {
        fx.f32(name).unwrap().0
    }

    /// y = f(x) and gx for upstream gy, checked against the fixture's y and gx.
    pub fn unary(folder: &str, stem: &str, f: impl Fn(&Tensor) -> Tensor) -> Vec<Result<(), String>> {
        let fx = Fixture::load(folder, stem).unwrap();
        let x = load(&fx, "x").with_grad();
        let y = f(&x);
        let gr = backward_with(&y, &load(&fx, "gy")).unwrap();
        vec![
            ssnet::golden::check_rel_l2("y", &y.to_f32().unwrap(), &want(&fx, "y"), super::tol::OP),
            ssnet::golden::check_rel_l2("gx", &gr.get(&x).unwrap().to_f32().unwrap(), &want(&fx, "gx"), super::tol::OP),
        ]
    }

    /// A loss of softmax(logits): the loss value and d loss / d logits.
    pub fn loss_of_logits(stem: &str, f: impl Fn(&Fixture, &Tensor) -> Tensor) -> Vec<Result<(), String>> {
        let fx = Fixture::load("ops", stem).unwrap();
        let logits = load(&fx, "logits").with_grad();
        let loss = f(&fx, &logits);
        let gr = ssnet::autograd::backward(&loss).unwrap();
        vec![
            ssnet::golden::check_scalar("loss", loss.item().unwrap() as f64, want(&fx, "loss")[0] as f64, super::tol::OP),
            ssnet::golden::check_rel_l2("glogits", &gr.get(&logits).unwrap().to_f32().unwrap(), &want(&fx, "glogits"), super::tol::OP),
        ]
    }
}

#[test]
fn ops__softmax_dim1() {
    verdict(golden_ops_support::unary("ops", "softmax_dim1", |x| ssnet::ops::softmax(x).unwrap()));
}

#[test]
fn ops__relu() {
    verdict(golden_ops_support::unary("ops", "relu", |x| ssnet::ops::relu(x).unwrap()));
}

#[test]
fn ops__leaky_relu_0_01() {
    let slope = Fixture::load("ops", "leaky_relu_0.01").unwrap().cfg_f64("slope").unwrap() as f32;
    verdict(golden_ops_support::unary("ops", "leaky_relu_0.01", |x| ssnet::ops::leaky_relu(x, slope).unwrap()));
}

#[test]
fn ops__leaky_relu_0_2() {
    let slope = Fixture::load("ops", "leaky_relu_0.2").unwrap().cfg_f64("slope").unwrap() as f32;
    verdict(golden_ops_support::unary("ops", "leaky_relu_0.2", |x| ssnet::ops::leaky_relu(x, slope).unwrap()));
}

#[test]
fn ops__sigmoid() {
    verdict(golden_ops_support::unary("ops", "sigmoid", |x| ssnet::ops::sigmoid(x).unwrap()));
}

#[test]
fn ops__cross_entropy() {
    verdict(golden_ops_support::loss_of_logits("cross_entropy", |fx, l| {
        ssnet::ops::cross_entropy(l, &golden_ops_support::labels(fx, "labels")).unwrap()
    }));
}

/// The softmax then the Dice of the probabilities, and the fused softmax + Dice on the logits
/// (what the training step runs): both against the reference.
#[test]
fn ops__binary_dice_softmax() {
    let mut r = golden_ops_support::loss_of_logits("binary_dice_softmax", |fx, l| {
        let p = ssnet::ops::softmax(l).unwrap();
        ssnet::ops::binary_dice_loss(&p, &golden_ops_support::labels(fx, "labels")).unwrap()
    });
    r.extend(golden_ops_support::loss_of_logits("binary_dice_softmax", |fx, l| {
        let labels = golden_ops_support::labels(fx, "labels");
        ssnet::ops::softmax_dice_loss(l, &labels, ssnet::ops::DiceKind::BinaryForeground).unwrap()
    }));
    verdict(r);
}

#[test]
fn ops__multiclass_dice_softmax() {
    let mut r = golden_ops_support::loss_of_logits("multiclass_dice_softmax", |fx, l| {
        let p = ssnet::ops::softmax(l).unwrap();
        ssnet::ops::multiclass_dice_loss(&p, &golden_ops_support::labels(fx, "labels")).unwrap()
    });
    r.extend(golden_ops_support::loss_of_logits("multiclass_dice_softmax", |fx, l| {
        let labels = golden_ops_support::labels(fx, "labels");
        ssnet::ops::softmax_dice_loss(l, &labels, ssnet::ops::DiceKind::MeanClasses).unwrap()
    }));
    verdict(r);
}

#[test]
fn ops__soft_dice_softmax() {
    verdict(golden_ops_support::loss_of_logits("soft_dice_softmax", |fx, l| {
        let p = ssnet::ops::softmax(l).unwrap();
        ssnet::ops::soft_dice_loss(&p, &golden_ops_support::load(fx, "target_probs")).unwrap()
    }));
}

#[test]
fn ops__linear() {
    use golden_ops_support::{load, want};
    let fx = Fixture::load("ops", "linear").unwrap();
    let (x, w, b) = (load(&fx, "x").with_grad(), load(&fx, "w").with_grad(), load(&fx, "b").with_grad());
    let y = ssnet::ops::linear(&x, &w, Some(&b)).unwrap();
    let gr = ssnet::autograd::backward_with(&y, &load(&fx, "gy")).unwrap();
    let t = tol::OP;
    verdict(vec![
        ssnet::golden::check_rel_l2("y", &y.to_f32().unwrap(), &want(&fx, "y"), t),
        ssnet::golden::check_rel_l2("gx", &gr.get(&x).unwrap().to_f32().unwrap(), &want(&fx, "gx"), t),
        ssnet::golden::check_rel_l2("gw", &gr.get(&w).unwrap().to_f32().unwrap(), &want(&fx, "gw"), t),
        ssnet::golden::check_rel_l2("gb", &gr.get(&b).unwrap().to_f32().unwrap(), &want(&fx, "gb"), t),
    ]);
}

#[test]
fn ops__cosine_similarity() {
    use golden_ops_support::{load, want};
    let fx = Fixture::load("ops", "cosine_similarity").unwrap();
    let (a, m) = (load(&fx, "a").with_grad(), load(&fx, "m"));
    let s = ssnet::ops::cosine_similarity(&a, &m).unwrap();
    let gr = ssnet::autograd::backward_with(&s, &load(&fx, "gs")).unwrap();
    verdict(vec![
        ssnet::golden::check_rel_l2("s", &s.to_f32().unwrap(), &want(&fx, "s"), tol::OP),
        ssnet::golden::check_rel_l2("ga", &gr.get(&a).unwrap().to_f32().unwrap(), &want(&fx, "ga"), tol::OP),
    ]);
}
