// Golden tests of the convolutions (conv3d, conv2d, conv_transpose3d): forward output y and,
// for the fixture's upstream gradient gy, the input/weight/bias gradients gx, gw, gb.
// Included by tests/golden.rs. The op, kernel, stride and padding come from each fixture
// (rank of x, config "transposed", "stride", "padding"), never from its name.

mod golden_conv_support {
    use ssnet::autograd::backward_with;
    use ssnet::golden::{Fixture, Parity};
    use ssnet::gpu::Gpu;
    use ssnet::tensor::Tensor;

    fn load(fx: &Fixture, name: &str) -> Tensor {
        let gpu = Gpu::shared().unwrap_or_else(|e| panic!("golden tests need a GPU adapter: {e}"));
        let (v, s) = fx.f32(name).unwrap();
        Tensor::from_f32(&gpu, &v, &s).unwrap()
    }

    pub fn run(stem: &str) {
        let fx = Fixture::load("ops", stem).unwrap();
        let stride = fx.cfg_f64("stride").unwrap() as usize;
        let pad = fx.cfg_f64("padding").unwrap() as usize;
        let kernel = fx.cfg_f64("kernel").unwrap() as usize;
        let transposed = fx
            .config
            .get("transposed")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let x = load(&fx, "x").with_grad();
        let w = load(&fx, "w").with_grad();
        let b = load(&fx, "b").with_grad();
        assert!(
            w.shape()[2..].iter().all(|&k| k == kernel),
            "{stem}: weight {:?} vs config kernel {kernel}",
            w.shape()
        );
        let rank = x.shape().len();
        let y = match (transposed, rank) {
            (true, 5) => {
                assert_eq!(pad, 0, "{stem}: padded transposed conv");
                ssnet::ops::conv_transpose3d(&x, &w, Some(&b), stride)
            }
            (false, 5) => ssnet::ops::conv3d(&x, &w, Some(&b), stride, pad),
            (false, 4) => ssnet::ops::conv2d(&x, &w, Some(&b), stride, pad),
            _ => panic!("{stem}: no conv op for rank {rank} (transposed {transposed})"),
        }
        .unwrap();
        let gr = backward_with(&y, &load(&fx, "gy")).unwrap();
        let gw_tol = if rank == 5 {
            super::tol::CONV3D_GW
        } else {
            super::tol::OP
        };
        let mut p = Parity::new(&fx);
        let got = |t: &Tensor| gr.get(t).unwrap().to_f32().unwrap();
        p.tensor("y", "y", &y.to_f32().unwrap(), super::tol::OP);
        p.tensor("gx", "gx", &got(&x), super::tol::OP);
        p.tensor("gw", "gw", &got(&w), gw_tol);
        p.tensor("gb", "gb", &got(&b), super::tol::OP);
        p.finish();
    }
}

#[test]
fn ops__conv3d_k3_p1() {
    golden_conv_support::run("conv3d_k3_p1");
}

#[test]
fn ops__conv3d_k2_s2() {
    golden_conv_support::run("conv3d_k2_s2");
}

#[test]
fn ops__conv3d_k1() {
    golden_conv_support::run("conv3d_k1");
}

#[test]
fn ops__conv_transpose3d_k2_s2() {
    golden_conv_support::run("conv_transpose3d_k2_s2");
}

#[test]
fn ops__conv2d_k3_p1() {
    golden_conv_support::run("conv2d_k3_p1");
}

#[test]
fn ops__conv2d_k1() {
    golden_conv_support::run("conv2d_k1");
}
