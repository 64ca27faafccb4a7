// Golden tests of BatchNorm, max pooling and bilinear upsampling, included by tests/golden.rs.

/// One BatchNorm fixture: forward in the fixture's mode (config `training`), running
/// statistics after it, and the input / gamma / beta gradients for the upstream `gy`.
fn golden_batchnorm(stem: &str) {
    use ssnet::ops::{self, Act, BnMode};
    use ssnet::tensor::Tensor;
    let fx = Fixture::load("ops", stem).unwrap();
    let g = ssnet::gpu::Gpu::shared().unwrap();
    let t = |name: &str| {
        let (v, s) = fx.f32(name).unwrap();
        (Tensor::from_f32(&g, &v, &s).unwrap(), v)
    };
    let training = fx
        .config
        .get("training")
        .and_then(|v| v.as_bool())
        .expect("config.training");
    let mode = if training {
        BnMode::Train
    } else {
        BnMode::Eval
    };
    let momentum = fx.cfg_f64("momentum").unwrap() as f32;
    let eps = fx.cfg_f64("eps").unwrap() as f32;
    let x = t("x").0.with_grad();
    let gamma = t("gamma").0.with_grad();
    let beta = t("beta").0.with_grad();
    let (rm, rv) = (t("running_mean").0, t("running_var").0);
    let y = ops::batch_norm(&x, &gamma, &beta, &rm, &rv, mode, momentum, eps, Act::None).unwrap();
    let grads = ssnet::autograd::backward_with(&y, &t("gy").0).unwrap();
    let mut p = ssnet::golden::Parity::new(&fx);
    let mut chk = |name: &str, got: &Tensor| p.tensor(name, name, &got.to_f32().unwrap(), tol::OP);
    chk("y", &y);
    chk("gx", grads.get(&x).unwrap());
    chk("ggamma", grads.get(&gamma).unwrap());
    chk("gbeta", grads.get(&beta).unwrap());
    chk("running_mean_after", &rm);
    chk("running_var_after", &rv);
    p.finish();
}

#[test]
fn ops__batchnorm1d_train() {
    golden_batchnorm("batchnorm1d_train");
}

#[test]
fn ops__batchnorm2d_train() {
    golden_batchnorm("batchnorm2d_train");
}

#[test]
fn ops__batchnorm3d_train() {
    golden_batchnorm("batchnorm3d_train");
}

#[test]
fn ops__batchnorm3d_eval() {
    golden_batchnorm("batchnorm3d_eval");
}

/// A resampling fixture (x, gy -> y, gx) through `op`.
fn golden_resample(stem: &str, op: &dyn Fn(&ssnet::tensor::Tensor) -> ssnet::tensor::Tensor) {
    use ssnet::tensor::Tensor;
    let fx = Fixture::load("ops", stem).unwrap();
    let g = ssnet::gpu::Gpu::shared().unwrap();
    let (xv, xs) = fx.f32("x").unwrap();
    let (gyv, gys) = fx.f32("gy").unwrap();
    let x = Tensor::from_f32(&g, &xv, &xs).unwrap().with_grad();
    let y = op(&x);
    let grads =
        ssnet::autograd::backward_with(&y, &Tensor::from_f32(&g, &gyv, &gys).unwrap()).unwrap();
    let gx = grads.get(&x).unwrap();
    assert_eq!(
        y.shape(),
        fx.shape("y").unwrap().as_slice(),
        "{stem}: output shape"
    );
    let mut p = ssnet::golden::Parity::new(&fx);
    p.tensor("y", "y", &y.to_f32().unwrap(), tol::OP);
    p.tensor("gx", "gx", &gx.to_f32().unwrap(), tol::OP);
    p.finish();
}

#[test]
fn ops__max_pool2d_k2() {
    let fx = Fixture::load("ops", "max_pool2d_k2").unwrap();
    let k = fx.cfg_f64("kernel").unwrap() as usize;
    golden_resample("max_pool2d_k2", &|x| ssnet::ops::max_pool2d(x, k).unwrap());
}

#[test]
fn ops__upsample_bilinear2x_ac() {
    let fx = Fixture::load("ops", "upsample_bilinear2x_ac").unwrap();
    assert_eq!(fx.cfg_f64("scale").unwrap(), 2.0, "only x2 is implemented");
    assert_eq!(
        fx.config.get("align_corners").and_then(|v| v.as_bool()),
        Some(true),
        "only align_corners = True is implemented"
    );
    golden_resample("upsample_bilinear2x_ac", &|x| {
        ssnet::ops::upsample_bilinear2x(x).unwrap()
    });
}
