//! Resampling twins (f64): max pooling, bilinear ×2 (align_corners), channel concat.

/// Max pooling, kernel = stride = k, of x [N, C, H, W]: (y [N, C, H/k, W/k], argmax offset
/// dy * k + dx of every window, first maximum on ties).
pub fn max_pool2d(x: &[f64], shape: &[usize], k: usize) -> (Vec<f64>, Vec<u32>) {
    let [n, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
    let (ho, wo) = (h / k, w / k);
    let mut y = vec![0.0; n * c * ho * wo];
    let mut idx = vec![0u32; y.len()];
    for nc in 0..n * c {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut best = f64::NEG_INFINITY;
                let mut bi = 0;
                for dy in 0..k {
                    for dx in 0..k {
                        let v = x[(nc * h + oy * k + dy) * w + ox * k + dx];
                        if v > best || v.is_nan() {
                            best = v;
                            bi = dy * k + dx;
                        }
                    }
                }
                let o = (nc * ho + oy) * wo + ox;
                y[o] = best;
                idx[o] = bi as u32;
            }
        }
    }
    (y, idx)
}

/// Input gradient of max pooling (scatter to each window's argmax).
pub fn max_pool2d_bwd_input(g: &[f64], idx: &[u32], shape: &[usize], k: usize) -> Vec<f64> {
    let [n, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
    let (ho, wo) = (h / k, w / k);
    let mut gx = vec![0.0; n * c * h * w];
    for nc in 0..n * c {
        for oy in 0..ho {
            for ox in 0..wo {
                let o = (nc * ho + oy) * wo + ox;
                let (dy, dx) = (idx[o] as usize / k, idx[o] as usize % k);
                gx[(nc * h + oy * k + dy) * w + ox * k + dx] += g[o];
            }
        }
    }
    gx
}

/// align_corners source of output position o: (i0, i1, lambda), as PyTorch.
fn src(o: usize, n_in: usize, n_out: usize) -> (usize, usize, f64) {
    let scale = if n_out > 1 {
        (n_in as f64 - 1.0) / (n_out as f64 - 1.0)
    } else {
        0.0
    };
    let r = scale * o as f64;
    let i0 = (r.floor() as usize).min(n_in - 1);
    let i1 = if i0 + 1 < n_in { i0 + 1 } else { i0 };
    (i0, i1, r - i0 as f64)
}

/// Bilinear ×2 with align_corners = True: [N, C, H, W] -> [N, C, 2H, 2W].
pub fn upsample_bilinear2x(x: &[f64], shape: &[usize]) -> Vec<f64> {
    let [n, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
    let (ho, wo) = (2 * h, 2 * w);
    let mut y = vec![0.0; n * c * ho * wo];
    for nc in 0..n * c {
        for oy in 0..ho {
            let (y0, y1, ly) = src(oy, h, ho);
            for ox in 0..wo {
                let (x0, x1, lx) = src(ox, w, wo);
                let at = |yy: usize, xx: usize| x[(nc * h + yy) * w + xx];
                y[(nc * ho + oy) * wo + ox] = (1.0 - ly)
                    * ((1.0 - lx) * at(y0, x0) + lx * at(y0, x1))
                    + ly * ((1.0 - lx) * at(y1, x0) + lx * at(y1, x1));
            }
        }
    }
    y
}

/// Input gradient of [`upsample_bilinear2x`] (scatter); `shape` is the input's.
pub fn upsample_bilinear2x_bwd_input(g: &[f64], shape: &[usize]) -> Vec<f64> {
    let [n, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
    let (ho, wo) = (2 * h, 2 * w);
    let mut gx = vec![0.0; n * c * h * w];
    for nc in 0..n * c {
        for oy in 0..ho {
            let (y0, y1, ly) = src(oy, h, ho);
            for ox in 0..wo {
                let (x0, x1, lx) = src(ox, w, wo);
                let gv = g[(nc * ho + oy) * wo + ox];
                let mut add =
                    |yy: usize, xx: usize, wgt: f64| gx[(nc * h + yy) * w + xx] += wgt * gv;
                add(y0, x0, (1.0 - ly) * (1.0 - lx));
                add(y0, x1, (1.0 - ly) * lx);
                add(y1, x0, ly * (1.0 - lx));
                add(y1, x1, ly * lx);
            }
        }
    }
    gx
}

/// Concatenation along axis 1 of tensors [N, C_i, S...] given as (data, shape).
pub fn concat_channels(xs: &[(&[f64], &[usize])]) -> Vec<f64> {
    let n = xs[0].1[0];
    let s: usize = xs[0].1[2..].iter().product();
    let mut out = vec![];
    for i in 0..n {
        for (x, sh) in xs {
            let per = sh[1] * s;
            out.extend_from_slice(&x[i * per..(i + 1) * per]);
        }
    }
    out
}

/// Channels `start .. start + count` of x [N, C, S...].
pub fn slice_channels(x: &[f64], shape: &[usize], start: usize, count: usize) -> Vec<f64> {
    let (n, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    let mut out = vec![];
    for i in 0..n {
        out.extend_from_slice(&x[(i * c + start) * s..(i * c + start + count) * s]);
    }
    out
}
