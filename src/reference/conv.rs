//! Convolution twins (f64): 3D convolution with any kernel, stride and zero padding, 2D
//! convolution as the 3D one with a unit leading spatial axis, and the transposed 3D
//! convolution, each with its input, weight and bias backwards.
//!
//! Layouts are PyTorch's: x [N, Ci, X, Y, Z], conv weight [Co, Ci, kx, ky, kz], transposed
//! weight [Ci, Co, kx, ky, kz], outputs [N, Co, ...]; 2D drops the Z axis everywhere.
//! Shapes are checked with `assert!` (these are test helpers).

/// Output length of a convolution along one axis: `(x + 2p - k) / s + 1`.
pub fn conv_out_len(x: usize, k: usize, s: usize, p: usize) -> usize {
    assert!(
        s > 0 && x + 2 * p >= k,
        "conv axis: input {x} + 2*{p} smaller than kernel {k}"
    );
    (x + 2 * p - k) / s + 1
}

/// Per-axis geometry of one convolution (3 spatial axes).
#[derive(Clone, Copy, Debug)]
struct Nd {
    n: usize,
    ci: usize,
    co: usize,
    x: [usize; 3],
    k: [usize; 3],
    s: [usize; 3],
    p: [usize; 3],
    o: [usize; 3],
}

impl Nd {
    /// From 5-D x and conv weight shapes.
    fn conv3d(x_shape: &[usize], w_shape: &[usize], stride: usize, pad: usize) -> Nd {
        assert_eq!(x_shape.len(), 5, "conv3d x shape {x_shape:?}");
        assert_eq!(w_shape.len(), 5, "conv3d w shape {w_shape:?}");
        assert_eq!(
            x_shape[1], w_shape[1],
            "conv3d channels: x {x_shape:?} w {w_shape:?}"
        );
        let x = [x_shape[2], x_shape[3], x_shape[4]];
        let k = [w_shape[2], w_shape[3], w_shape[4]];
        let (s, p) = ([stride; 3], [pad; 3]);
        let o = [0, 1, 2].map(|a| conv_out_len(x[a], k[a], s[a], p[a]));
        Nd {
            n: x_shape[0],
            ci: x_shape[1],
            co: w_shape[0],
            x,
            k,
            s,
            p,
            o,
        }
    }

    /// From 4-D x and weight shapes: the 3D geometry with a unit leading spatial axis.
    fn conv2d(x_shape: &[usize], w_shape: &[usize], stride: usize, pad: usize) -> Nd {
        assert_eq!(x_shape.len(), 4, "conv2d x shape {x_shape:?}");
        assert_eq!(w_shape.len(), 4, "conv2d w shape {w_shape:?}");
        assert_eq!(
            x_shape[1], w_shape[1],
            "conv2d channels: x {x_shape:?} w {w_shape:?}"
        );
        let x = [1, x_shape[2], x_shape[3]];
        let k = [1, w_shape[2], w_shape[3]];
        let (s, p) = ([1, stride, stride], [0, pad, pad]);
        let o = [0, 1, 2].map(|a| conv_out_len(x[a], k[a], s[a], p[a]));
        Nd {
            n: x_shape[0],
            ci: x_shape[1],
            co: w_shape[0],
            x,
            k,
            s,
            p,
            o,
        }
    }

    fn xlen(&self) -> usize {
        self.n * self.ci * self.x.iter().product::<usize>()
    }
    fn ylen(&self) -> usize {
        self.n * self.co * self.o.iter().product::<usize>()
    }
    fn wlen(&self) -> usize {
        self.co * self.ci * self.k.iter().product::<usize>()
    }

    /// Calls `f(x index, w index, y index)` for every product term of the convolution.
    fn for_each(&self, mut f: impl FnMut(usize, usize, usize)) {
        let [x0, x1, x2] = self.x;
        let [k0, k1, k2] = self.k;
        let [o0, o1, o2] = self.o;
        for n in 0..self.n {
            for co in 0..self.co {
                for a in 0..o0 {
                    for b in 0..o1 {
                        for c in 0..o2 {
                            let yi = (((n * self.co + co) * o0 + a) * o1 + b) * o2 + c;
                            for ci in 0..self.ci {
                                for d0 in 0..k0 {
                                    let i0 = (a * self.s[0] + d0) as isize - self.p[0] as isize;
                                    if i0 < 0 || i0 >= x0 as isize {
                                        continue;
                                    }
                                    for d1 in 0..k1 {
                                        let i1 = (b * self.s[1] + d1) as isize - self.p[1] as isize;
                                        if i1 < 0 || i1 >= x1 as isize {
                                            continue;
                                        }
                                        for d2 in 0..k2 {
                                            let i2 =
                                                (c * self.s[2] + d2) as isize - self.p[2] as isize;
                                            if i2 < 0 || i2 >= x2 as isize {
                                                continue;
                                            }
                                            let xi = (((n * self.ci + ci) * x0 + i0 as usize) * x1
                                                + i1 as usize)
                                                * x2
                                                + i2 as usize;
                                            let wi = (((co * self.ci + ci) * k0 + d0) * k1 + d1)
                                                * k2
                                                + d2;
                                            f(xi, wi, yi);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn fwd(&self, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
        assert_eq!(x.len(), self.xlen(), "conv x length");
        assert_eq!(w.len(), self.wlen(), "conv w length");
        let mut y = vec![0.0; self.ylen()];
        self.for_each(|xi, wi, yi| y[yi] += x[xi] * w[wi]);
        if let Some(b) = b {
            assert_eq!(b.len(), self.co, "conv bias length");
            let ov: usize = self.o.iter().product();
            for (i, v) in y.iter_mut().enumerate() {
                *v += b[(i / ov) % self.co];
            }
        }
        y
    }

    fn bwd_input(&self, g: &[f64], w: &[f64]) -> Vec<f64> {
        assert_eq!(g.len(), self.ylen(), "conv upstream length");
        let mut gx = vec![0.0; self.xlen()];
        self.for_each(|xi, wi, yi| gx[xi] += g[yi] * w[wi]);
        gx
    }

    fn bwd_weight(&self, g: &[f64], x: &[f64]) -> Vec<f64> {
        assert_eq!(g.len(), self.ylen(), "conv upstream length");
        assert_eq!(x.len(), self.xlen(), "conv x length");
        let mut gw = vec![0.0; self.wlen()];
        self.for_each(|xi, wi, yi| gw[wi] += g[yi] * x[xi]);
        gw
    }
}

/// Sum of `g` [N, C, ...] over the batch and every spatial axis: [C].
fn channel_sums(g: &[f64], g_shape: &[usize]) -> Vec<f64> {
    assert!(g_shape.len() >= 2, "bias gradient of shape {g_shape:?}");
    let c = g_shape[1];
    let inner: usize = g_shape[2..].iter().product();
    assert_eq!(
        g.len(),
        g_shape.iter().product::<usize>(),
        "bias gradient length"
    );
    let mut out = vec![0.0; c];
    for (i, &v) in g.iter().enumerate() {
        out[(i / inner) % c] += v;
    }
    out
}

/// Output shape of `conv3d` for x [N, Ci, X, Y, Z] and w [Co, Ci, kx, ky, kz].
pub fn conv3d_out_shape(
    x_shape: &[usize],
    w_shape: &[usize],
    stride: usize,
    pad: usize,
) -> Vec<usize> {
    let g = Nd::conv3d(x_shape, w_shape, stride, pad);
    vec![g.n, g.co, g.o[0], g.o[1], g.o[2]]
}

/// Output shape of `conv2d` for x [N, Ci, H, W] and w [Co, Ci, kh, kw].
pub fn conv2d_out_shape(
    x_shape: &[usize],
    w_shape: &[usize],
    stride: usize,
    pad: usize,
) -> Vec<usize> {
    let g = Nd::conv2d(x_shape, w_shape, stride, pad);
    vec![g.n, g.co, g.o[1], g.o[2]]
}

/// y [N, Co, OX, OY, OZ] = x ⋆ w + b with stride and zero padding on every axis.
pub fn conv3d(
    x: &[f64],
    x_shape: &[usize],
    w: &[f64],
    w_shape: &[usize],
    b: Option<&[f64]>,
    stride: usize,
    pad: usize,
) -> Vec<f64> {
    Nd::conv3d(x_shape, w_shape, stride, pad).fwd(x, w, b)
}

/// d/dx of `sum(conv3d(x) * g)`.
pub fn conv3d_bwd_input(
    g: &[f64],
    w: &[f64],
    w_shape: &[usize],
    x_shape: &[usize],
    stride: usize,
    pad: usize,
) -> Vec<f64> {
    Nd::conv3d(x_shape, w_shape, stride, pad).bwd_input(g, w)
}

/// d/dw of `sum(conv3d(x) * g)`: [Co, Ci, kx, ky, kz].
pub fn conv3d_bwd_weight(
    g: &[f64],
    x: &[f64],
    x_shape: &[usize],
    w_shape: &[usize],
    stride: usize,
    pad: usize,
) -> Vec<f64> {
    Nd::conv3d(x_shape, w_shape, stride, pad).bwd_weight(g, x)
}

/// d/db: `g` summed over N and the spatial axes.
pub fn conv3d_bwd_bias(g: &[f64], g_shape: &[usize]) -> Vec<f64> {
    channel_sums(g, g_shape)
}

/// 2D convolution: x [N, Ci, H, W], w [Co, Ci, kh, kw].
pub fn conv2d(
    x: &[f64],
    x_shape: &[usize],
    w: &[f64],
    w_shape: &[usize],
    b: Option<&[f64]>,
    stride: usize,
    pad: usize,
) -> Vec<f64> {
    Nd::conv2d(x_shape, w_shape, stride, pad).fwd(x, w, b)
}

pub fn conv2d_bwd_input(
    g: &[f64],
    w: &[f64],
    w_shape: &[usize],
    x_shape: &[usize],
    stride: usize,
    pad: usize,
) -> Vec<f64> {
    Nd::conv2d(x_shape, w_shape, stride, pad).bwd_input(g, w)
}

pub fn conv2d_bwd_weight(
    g: &[f64],
    x: &[f64],
    x_shape: &[usize],
    w_shape: &[usize],
    stride: usize,
    pad: usize,
) -> Vec<f64> {
    Nd::conv2d(x_shape, w_shape, stride, pad).bwd_weight(g, x)
}

pub fn conv2d_bwd_bias(g: &[f64], g_shape: &[usize]) -> Vec<f64> {
    channel_sums(g, g_shape)
}

/// Geometry of a transposed convolution x [N, Ci, X, Y, Z], w [Ci, Co, k...], stride s, no
/// padding: output [N, Co, (X-1)s+kx, ...]. Any kernel and stride (the GPU op takes k == s).
#[derive(Clone, Copy, Debug)]
struct Tr {
    n: usize,
    ci: usize,
    co: usize,
    x: [usize; 3],
    k: [usize; 3],
    s: usize,
    o: [usize; 3],
}

impl Tr {
    fn new(x_shape: &[usize], w_shape: &[usize], stride: usize) -> Tr {
        assert_eq!(x_shape.len(), 5, "conv_transpose3d x shape {x_shape:?}");
        assert_eq!(w_shape.len(), 5, "conv_transpose3d w shape {w_shape:?}");
        assert_eq!(
            x_shape[1], w_shape[0],
            "conv_transpose3d channels: x {x_shape:?} w {w_shape:?}"
        );
        assert!(stride > 0);
        let x = [x_shape[2], x_shape[3], x_shape[4]];
        let k = [w_shape[2], w_shape[3], w_shape[4]];
        let o = [0, 1, 2].map(|a| (x[a] - 1) * stride + k[a]);
        Tr {
            n: x_shape[0],
            ci: x_shape[1],
            co: w_shape[1],
            x,
            k,
            s: stride,
            o,
        }
    }

    /// Calls `f(x index, w index, y index)` for every product term.
    fn for_each(&self, mut f: impl FnMut(usize, usize, usize)) {
        let [x0, x1, x2] = self.x;
        let [k0, k1, k2] = self.k;
        let [o0, o1, o2] = self.o;
        for n in 0..self.n {
            for ci in 0..self.ci {
                for a in 0..x0 {
                    for b in 0..x1 {
                        for c in 0..x2 {
                            let xi = (((n * self.ci + ci) * x0 + a) * x1 + b) * x2 + c;
                            for co in 0..self.co {
                                for d0 in 0..k0 {
                                    for d1 in 0..k1 {
                                        for d2 in 0..k2 {
                                            let wi = (((ci * self.co + co) * k0 + d0) * k1 + d1)
                                                * k2
                                                + d2;
                                            let (i0, i1, i2) =
                                                (a * self.s + d0, b * self.s + d1, c * self.s + d2);
                                            let yi = (((n * self.co + co) * o0 + i0) * o1 + i1)
                                                * o2
                                                + i2;
                                            f(xi, wi, yi);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn xlen(&self) -> usize {
        self.n * self.ci * self.x.iter().product::<usize>()
    }
    fn ylen(&self) -> usize {
        self.n * self.co * self.o.iter().product::<usize>()
    }
    fn wlen(&self) -> usize {
        self.ci * self.co * self.k.iter().product::<usize>()
    }
}

/// Output shape of `conv_transpose3d`.
pub fn conv_transpose3d_out_shape(
    x_shape: &[usize],
    w_shape: &[usize],
    stride: usize,
) -> Vec<usize> {
    let t = Tr::new(x_shape, w_shape, stride);
    vec![t.n, t.co, t.o[0], t.o[1], t.o[2]]
}

/// y [N, Co, (X-1)s+k, ...] = transposed convolution of x [N, Ci, X, Y, Z] with w [Ci, Co, k...].
pub fn conv_transpose3d(
    x: &[f64],
    x_shape: &[usize],
    w: &[f64],
    w_shape: &[usize],
    b: Option<&[f64]>,
    stride: usize,
) -> Vec<f64> {
    let t = Tr::new(x_shape, w_shape, stride);
    assert_eq!(x.len(), t.xlen(), "conv_transpose3d x length");
    assert_eq!(w.len(), t.wlen(), "conv_transpose3d w length");
    let mut y = vec![0.0; t.ylen()];
    t.for_each(|xi, wi, yi| y[yi] += x[xi] * w[wi]);
    if let Some(b) = b {
        assert_eq!(b.len(), t.co, "conv_transpose3d bias length");
        let ov: usize = t.o.iter().product();
        for (i, v) in y.iter_mut().enumerate() {
            *v += b[(i / ov) % t.co];
        }
    }
    y
}

pub fn conv_transpose3d_bwd_input(
    g: &[f64],
    w: &[f64],
    w_shape: &[usize],
    x_shape: &[usize],
    stride: usize,
) -> Vec<f64> {
    let t = Tr::new(x_shape, w_shape, stride);
    assert_eq!(g.len(), t.ylen(), "conv_transpose3d upstream length");
    let mut gx = vec![0.0; t.xlen()];
    t.for_each(|xi, wi, yi| gx[xi] += g[yi] * w[wi]);
    gx
}

pub fn conv_transpose3d_bwd_weight(
    g: &[f64],
    x: &[f64],
    x_shape: &[usize],
    w_shape: &[usize],
    stride: usize,
) -> Vec<f64> {
    let t = Tr::new(x_shape, w_shape, stride);
    assert_eq!(g.len(), t.ylen(), "conv_transpose3d upstream length");
    let mut gw = vec![0.0; t.wlen()];
    t.for_each(|xi, wi, yi| gw[wi] += g[yi] * x[xi]);
    gw
}

pub fn conv_transpose3d_bwd_bias(g: &[f64], g_shape: &[usize]) -> Vec<f64> {
    channel_sums(g, g_shape)
}
