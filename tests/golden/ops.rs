// Golden tests of the engine's basic ops (issue: engine foundation). Included by
// tests/golden.rs. Each compares forward and gradients at the README's op tolerance, or K times
// the reference's own float32 error where that is larger (ssnet::golden::parity).

mod golden_ops_support {
    use ssnet::autograd::backward_with;
    use ssnet::golden::{Fixture, Parity};
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

    /// Our tensor against the fixture's `key`, in a group of its own.
    pub fn op_tensor(p: &mut Parity, key: &str, got: &Tensor) {
        p.tensor(key, key, &got.to_f32().unwrap(), super::tol::OP);
    }

    /// y = f(x) and gx for upstream gy, checked against the fixture's y and gx.
    pub fn unary(folder: &str, stem: &str, f: impl Fn(&Tensor) -> Tensor) {
        let fx = Fixture::load(folder, stem).unwrap();
        let mut p = Parity::new(&fx);
        let x = load(&fx, "x").with_grad();
        let y = f(&x);
        let gr = backward_with(&y, &load(&fx, "gy")).unwrap();
        op_tensor(&mut p, "y", &y);
        op_tensor(&mut p, "gx", gr.get(&x).unwrap());
        p.finish();
    }

    /// One way of computing a loss from the fixture and the logits.
    pub type LossOf<'a> = &'a dyn Fn(&Fixture, &Tensor) -> Tensor;

    /// A loss of softmax(logits): the loss value and d loss / d logits, for each way of
    /// computing it (`label` names the way in the printout).
    pub fn loss_of_logits(stem: &str, ways: &[(&str, LossOf)]) {
        let fx = Fixture::load("ops", stem).unwrap();
        let mut p = Parity::new(&fx);
        for (label, f) in ways {
            let logits = load(&fx, "logits").with_grad();
            let loss = f(&fx, &logits);
            let gr = ssnet::autograd::backward(&loss).unwrap();
            let glogits = gr.get(&logits).unwrap().to_f32().unwrap();
            let (want, reference) = (p.stored("glogits").unwrap(), p.reference_f32("glogits").unwrap());
            let (lw, lr) = (p.stored("loss").unwrap()[0] as f64, p.reference_f32("loss").unwrap()[0] as f64);
            p.scalar_vs("loss", &format!("loss ({label})"), loss.item().unwrap() as f64, lw, lr, super::tol::OP);
            p.tensor_vs("glogits", &format!("glogits ({label})"), &glogits, &want, &reference, super::tol::OP);
        }
        p.finish();
    }
}

#[test]
fn ops__softmax_dim1() {
    golden_ops_support::unary("ops", "softmax_dim1", |x| ssnet::ops::softmax(x).unwrap());
}

#[test]
fn ops__relu() {
    golden_ops_support::unary("ops", "relu", |x| ssnet::ops::relu(x).unwrap());
}

#[test]
fn ops__leaky_relu_0_01() {
    let slope = Fixture::load("ops", "leaky_relu_0.01").unwrap().cfg_f64("slope").unwrap() as f32;
    golden_ops_support::unary("ops", "leaky_relu_0.01", |x| ssnet::ops::leaky_relu(x, slope).unwrap());
}

#[test]
fn ops__leaky_relu_0_2() {
    let slope = Fixture::load("ops", "leaky_relu_0.2").unwrap().cfg_f64("slope").unwrap() as f32;
    golden_ops_support::unary("ops", "leaky_relu_0.2", |x| ssnet::ops::leaky_relu(x, slope).unwrap());
}

#[test]
fn ops__sigmoid() {
    golden_ops_support::unary("ops", "sigmoid", |x| ssnet::ops::sigmoid(x).unwrap());
}

#[test]
fn ops__cross_entropy() {
    golden_ops_support::loss_of_logits(
        "cross_entropy",
        &[("cross_entropy", &|fx, l| ssnet::ops::cross_entropy(l, &golden_ops_support::labels(fx, "labels")).unwrap())],
    );
}

/// The softmax then the Dice of the probabilities, and the fused softmax + Dice on the logits
/// (what the training step runs): both against the reference.
#[test]
fn ops__binary_dice_softmax() {
    golden_ops_support::loss_of_logits(
        "binary_dice_softmax",
        &[
            ("softmax then Dice", &|fx, l| {
                let p = ssnet::ops::softmax(l).unwrap();
                ssnet::ops::binary_dice_loss(&p, &golden_ops_support::labels(fx, "labels")).unwrap()
            }),
            ("fused softmax + Dice", &|fx, l| {
                let labels = golden_ops_support::labels(fx, "labels");
                ssnet::ops::softmax_dice_loss(l, &labels, ssnet::ops::DiceKind::BinaryForeground).unwrap()
            }),
        ],
    );
}

#[test]
fn ops__multiclass_dice_softmax() {
    golden_ops_support::loss_of_logits(
        "multiclass_dice_softmax",
        &[
            ("softmax then Dice", &|fx, l| {
                let p = ssnet::ops::softmax(l).unwrap();
                ssnet::ops::multiclass_dice_loss(&p, &golden_ops_support::labels(fx, "labels")).unwrap()
            }),
            ("fused softmax + Dice", &|fx, l| {
                let labels = golden_ops_support::labels(fx, "labels");
                ssnet::ops::softmax_dice_loss(l, &labels, ssnet::ops::DiceKind::MeanClasses).unwrap()
            }),
        ],
    );
}

#[test]
fn ops__soft_dice_softmax() {
    golden_ops_support::loss_of_logits(
        "soft_dice_softmax",
        &[("soft Dice", &|fx, l| {
            let p = ssnet::ops::softmax(l).unwrap();
            ssnet::ops::soft_dice_loss(&p, &golden_ops_support::load(fx, "target_probs")).unwrap()
        })],
    );
}

#[test]
fn ops__linear() {
    use golden_ops_support::{load, op_tensor};
    let fx = Fixture::load("ops", "linear").unwrap();
    let mut p = ssnet::golden::Parity::new(&fx);
    let (x, w, b) = (load(&fx, "x").with_grad(), load(&fx, "w").with_grad(), load(&fx, "b").with_grad());
    let y = ssnet::ops::linear(&x, &w, Some(&b)).unwrap();
    let gr = ssnet::autograd::backward_with(&y, &load(&fx, "gy")).unwrap();
    op_tensor(&mut p, "y", &y);
    op_tensor(&mut p, "gx", gr.get(&x).unwrap());
    op_tensor(&mut p, "gw", gr.get(&w).unwrap());
    op_tensor(&mut p, "gb", gr.get(&b).unwrap());
    p.finish();
}

#[test]
fn ops__cosine_similarity() {
    use golden_ops_support::{load, op_tensor};
    let fx = Fixture::load("ops", "cosine_similarity").unwrap();
    let mut p = ssnet::golden::Parity::new(&fx);
    let (a, m) = (load(&fx, "a").with_grad(), load(&fx, "m"));
    let s = ssnet::ops::cosine_similarity(&a, &m).unwrap();
    let gr = ssnet::autograd::backward_with(&s, &load(&fx, "gs")).unwrap();
    op_tensor(&mut p, "s", &s);
    op_tensor(&mut p, "ga", gr.get(&a).unwrap());
    p.finish();
}
