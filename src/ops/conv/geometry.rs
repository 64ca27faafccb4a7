//! Convolution geometry: the shapes of a convolution or a transposed convolution, checked,
//! and the `ConvParams` / `CtParams` uniforms the kernels read, filled from them.

use super::super::u32_of;
use crate::error::{Error, Result};
use crate::tensor::{numel, DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct ConvParams {
    pub(super) m: u32,
    pub(super) n: u32,
    pub(super) k: u32,
    pub(super) has_bias: u32,
    pub(super) sc: u32,
    pub(super) sx: u32,
    pub(super) sy: u32,
    pub(super) sz: u32,
    pub(super) sv: u32,
    pub(super) mx: u32,
    pub(super) my: u32,
    pub(super) mz: u32,
    pub(super) mv: u32,
    pub(super) kx: u32,
    pub(super) ky: u32,
    pub(super) kz: u32,
    pub(super) kv: u32,
    pub(super) stx: u32,
    pub(super) sty: u32,
    pub(super) stz: u32,
    pub(super) pdx: i32,
    pub(super) pdy: i32,
    pub(super) pdz: i32,
    pub(super) flip: u32,
    pub(super) wc: u32,
    pub(super) wstride: u32,
    pub(super) tiles_n: u32,
    pub(super) tiles_total: u32,
    pub(super) chunk: u32,
    pub(super) nchunks: u32,
    pub(super) rows: u32,
    pub(super) tiles_r: u32,
}

/// Mirrors `CtParams` in conv_transpose.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct CtParams {
    pub(super) m: u32,
    pub(super) n: u32,
    pub(super) k: u32,
    pub(super) has_bias: u32,
    pub(super) xv: u32,
    pub(super) xx: u32,
    pub(super) xy: u32,
    pub(super) xz: u32,
    pub(super) kx: u32,
    pub(super) ky: u32,
    pub(super) kz: u32,
    pub(super) kv: u32,
    pub(super) co: u32,
    pub(super) oy: u32,
    pub(super) oz: u32,
    pub(super) ov: u32,
    pub(super) tiles_n: u32,
    pub(super) tiles_total: u32,
    pub(super) _pad0: u32,
    pub(super) _pad1: u32,
}

/// One convolution's geometry on three spatial axes: x [n, ci, x], w [co, ci, k], y [n, co, o].
#[derive(Clone, Copy, Debug)]
pub(super) struct Geom {
    pub(super) n: usize,
    pub(super) ci: usize,
    pub(super) co: usize,
    pub(super) x: [usize; 3],
    pub(super) k: [usize; 3],
    pub(super) s: [usize; 3],
    pub(super) p: [usize; 3],
    pub(super) o: [usize; 3],
}

pub(super) fn vol(v: [usize; 3]) -> usize {
    v[0] * v[1] * v[2]
}

impl Geom {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        op: &str,
        what: &str,
        n: usize,
        ci: usize,
        co: usize,
        x: [usize; 3],
        k: [usize; 3],
        s: [usize; 3],
        p: [usize; 3],
    ) -> Result<Geom> {
        if s.contains(&0) {
            return Err(Error::op(op, format!("{what}: stride must be at least 1")));
        }
        if (0..3).any(|a| k[a] == 0 || x[a] + 2 * p[a] < k[a]) {
            return Err(Error::op(
                op,
                format!("{what}: kernel {k:?} larger than the input {x:?} padded by {p:?}"),
            ));
        }
        let o = [0, 1, 2].map(|a| (x[a] + 2 * p[a] - k[a]) / s[a] + 1);
        let g = Geom {
            n,
            ci,
            co,
            x,
            k,
            s,
            p,
            o,
        };
        // Signed source offsets in the kernels are i32.
        for (name, len) in [
            ("input", g.xlen()),
            ("output", g.ylen()),
            ("weight", g.wlen()),
        ] {
            if len > i32::MAX as usize {
                return Err(Error::op(
                    op,
                    format!("{what}: {name} of {len} elements exceeds 2^31"),
                ));
            }
        }
        Ok(g)
    }
    pub(super) fn kv(&self) -> usize {
        vol(self.k)
    }
    pub(super) fn xlen(&self) -> usize {
        self.n * self.ci * vol(self.x)
    }
    pub(super) fn ylen(&self) -> usize {
        self.n * self.co * vol(self.o)
    }
    pub(super) fn wlen(&self) -> usize {
        self.co * self.ci * self.kv()
    }
}

/// Geometry of a 3D (`d2` false: x [N, Ci, X, Y, Z], w [Co, Ci, kx, ky, kz]) or 2D (x [N, Ci,
/// H, W], w [Co, Ci, kh, kw], lifted to a unit leading axis) convolution.
pub(super) fn conv_geom(
    op: &str,
    x_shape: &[usize],
    w_shape: &[usize],
    stride: usize,
    pad: usize,
    d2: bool,
) -> Result<Geom> {
    let rank = if d2 { 4 } else { 5 };
    let what = format!("x {x_shape:?}, w {w_shape:?}, stride {stride}, padding {pad}");
    if x_shape.len() != rank || w_shape.len() != rank {
        return Err(Error::op(
            op,
            format!("{what}: expected rank-{rank} input and weight"),
        ));
    }
    if x_shape[1] != w_shape[1] {
        return Err(Error::op(
            op,
            format!(
                "{what}: input has {} channels, weight expects {}",
                x_shape[1], w_shape[1]
            ),
        ));
    }
    if numel(x_shape) == 0 || numel(w_shape) == 0 {
        return Err(Error::op(op, format!("{what}: empty input or weight")));
    }
    let (x, k, s, p) = if d2 {
        (
            [1, x_shape[2], x_shape[3]],
            [1, w_shape[2], w_shape[3]],
            [1, stride, stride],
            [0, pad, pad],
        )
    } else {
        (
            [x_shape[2], x_shape[3], x_shape[4]],
            [w_shape[2], w_shape[3], w_shape[4]],
            [stride; 3],
            [pad; 3],
        )
    };
    Geom::new(op, &what, x_shape[0], x_shape[1], w_shape[0], x, k, s, p)
}

/// The output shape in the caller's rank.
pub(super) fn y_shape(g: &Geom, d2: bool) -> Vec<usize> {
    if d2 {
        vec![g.n, g.co, g.o[1], g.o[2]]
    } else {
        vec![g.n, g.co, g.o[0], g.o[1], g.o[2]]
    }
}

pub(super) fn f32_check(op: &str, ts: &[&Tensor]) -> Result<()> {
    for t in ts {
        t.expect_dtype(op, DType::F32)?;
    }
    Ok(())
}

pub(super) fn u(op: &str, v: usize) -> Result<u32> {
    u32_of(op, v)
}

/// The gather fields every convolution kernel reads: the source's channels `sc` and extent
/// `src`, the output grid `out`, the kernel, the stride `st` and the padding offsets `pd`
/// of `g` (the GEMM sizes and tiling are the caller's).
fn gather_params(
    op: &str,
    g: &Geom,
    sc: usize,
    src: [usize; 3],
    out: [usize; 3],
    st: [usize; 3],
    pd: [i32; 3],
) -> Result<ConvParams> {
    Ok(ConvParams {
        sc: u(op, sc)?,
        sx: u(op, src[0])?,
        sy: u(op, src[1])?,
        sz: u(op, src[2])?,
        sv: u(op, vol(src))?,
        mx: u(op, out[0])?,
        my: u(op, out[1])?,
        mz: u(op, out[2])?,
        mv: u(op, vol(out))?,
        kx: u(op, g.k[0])?,
        ky: u(op, g.k[1])?,
        kz: u(op, g.k[2])?,
        kv: u(op, g.kv())?,
        stx: u(op, st[0])?,
        sty: u(op, st[1])?,
        stz: u(op, st[2])?,
        pdx: pd[0],
        pdy: pd[1],
        pdz: pd[2],
        ..Default::default()
    })
}

/// The padding of `g` as signed offsets, negated for the flipped kernel.
fn pads(g: &Geom, negate: bool) -> [i32; 3] {
    g.p.map(|p| if negate { -(p as i32) } else { p as i32 })
}

/// The `conv_gemm` geometry of the forward convolution `g`.
pub(super) fn fwd_params(op: &str, g: &Geom) -> Result<ConvParams> {
    let (m, n, k) = (g.n * vol(g.o), g.co, g.ci * g.kv());
    Ok(ConvParams {
        m: u(op, m)?,
        n: u(op, n)?,
        k: u(op, k)?,
        has_bias: 0, // set at launch
        flip: 0,
        wc: u(op, g.kv())?,
        wstride: u(op, k)?,
        ..gather_params(op, g, g.ci, g.x, g.o, g.s, pads(g, false))?
    })
}

/// The geometry of a weight-gradient GEMM (tiles and chunks filled in by the caller).
pub(super) fn wgrad_params(op: &str, g: &Geom) -> Result<ConvParams> {
    let (r, rows, cols) = (g.n * vol(g.o), g.co, g.ci * g.kv());
    Ok(ConvParams {
        m: u(op, r)?,
        n: u(op, cols)?,
        k: u(op, cols)?,
        rows: u(op, rows)?,
        ..gather_params(op, g, g.ci, g.x, g.o, g.s, pads(g, false))?
    })
}

/// A transposed conv's x [n, ci, xs], w [ci, co, k] (kernel == stride).
#[derive(Clone, Copy, Debug)]
pub(super) struct CtGeom {
    pub(super) n: usize,
    pub(super) ci: usize,
    pub(super) xs: [usize; 3],
    pub(super) co: usize,
    pub(super) k: [usize; 3],
}

/// The geometry of a transposed conv, checking kernel == stride.
pub(super) fn ct_geom(
    op: &str,
    x_shape: &[usize],
    w_shape: &[usize],
    stride: usize,
) -> Result<CtGeom> {
    let what = format!("x {x_shape:?}, w {w_shape:?}, stride {stride}");
    if x_shape.len() != 5 || w_shape.len() != 5 {
        return Err(Error::op(
            op,
            format!("{what}: expected rank-5 input and weight [Ci, Co, k, k, k]"),
        ));
    }
    if x_shape[1] != w_shape[0] {
        return Err(Error::op(
            op,
            format!(
                "{what}: input has {} channels, weight expects {}",
                x_shape[1], w_shape[0]
            ),
        ));
    }
    let k = [w_shape[2], w_shape[3], w_shape[4]];
    if k != [stride; 3] {
        return Err(Error::op(op, format!("{what}: kernel {k:?} != stride is not supported (only kernel == stride, e.g. 2x2x2/2)")));
    }
    if numel(x_shape) == 0 || numel(w_shape) == 0 {
        return Err(Error::op(op, format!("{what}: empty input or weight")));
    }
    let xs = [x_shape[2], x_shape[3], x_shape[4]];
    let ylen = x_shape[0] * w_shape[1] * vol(xs) * vol(k);
    if ylen > i32::MAX as usize || numel(x_shape) > i32::MAX as usize {
        return Err(Error::op(op, format!("{what}: tensors over 2^31 elements")));
    }
    Ok(CtGeom {
        n: x_shape[0],
        ci: x_shape[1],
        xs,
        co: w_shape[1],
        k,
    })
}

pub(super) fn ct_out_shape(n: usize, co: usize, xs: [usize; 3], k: [usize; 3]) -> Vec<usize> {
    vec![n, co, xs[0] * k[0], xs[1] * k[1], xs[2] * k[2]]
}

/// The `conv_gemm` geometry of the input gradient of the stride-1 convolution `g`: a
/// stride-1 convolution of gy with the flipped kernel, rows = input voxels, columns = Ci,
/// reduction = Co·k³; input voxel i reads gy at i + p - d.
pub(super) fn bwd_input_params(op: &str, g: &Geom) -> Result<ConvParams> {
    let (m, n, k) = (g.n * vol(g.x), g.ci, g.co * g.kv());
    Ok(ConvParams {
        m: u(op, m)?,
        n: u(op, n)?,
        k: u(op, k)?,
        has_bias: 0,
        flip: 1,
        wc: u(op, g.ci * g.kv())?,
        wstride: u(op, g.kv())?,
        ..gather_params(op, g, g.co, g.o, g.x, [1; 3], pads(g, true))?
    })
}

/// The `conv_bwd_input_direct` geometry of the input gradient of the strided convolution
/// `g` (one invocation per input-gradient element, a direct gather).
pub(super) fn direct_params(op: &str, g: &Geom) -> Result<ConvParams> {
    Ok(ConvParams {
        m: u(op, g.xlen())?,
        n: u(op, g.ci)?,
        ..gather_params(op, g, g.co, g.o, g.x, g.s, pads(g, false))?
    })
}

/// Checks an optional bias of `op` against the `co` output channels of weight `w`.
pub(super) fn check_bias(op: &str, b: Option<&Tensor>, co: usize, w: &Tensor) -> Result<()> {
    if let Some(b) = b {
        b.expect_dtype(op, DType::F32)?;
        if b.shape() != [co] {
            return Err(Error::op(
                op,
                format!(
                    "bias {:?} for weight {:?}: expected [{co}]",
                    b.shape(),
                    w.shape()
                ),
            ));
        }
    }
    Ok(())
}

/// The `ct_gemm` geometry of a transposed convolution (kernel == stride) of x [n, ci, xs]
/// with w [ci, co, k]: rows = n·voxels of x, columns = co·k³, reduction = ci.
pub(super) fn ct_params(op: &str, c: &CtGeom, has_bias: bool) -> Result<CtParams> {
    let CtGeom { n, ci, xs, co, k } = *c;
    let kv = vol(k);
    let os = [xs[0] * k[0], xs[1] * k[1], xs[2] * k[2]];
    let (m, cols) = (n * vol(xs), co * kv);
    Ok(CtParams {
        m: u(op, m)?,
        n: u(op, cols)?,
        k: u(op, ci)?,
        has_bias: has_bias as u32,
        xv: u(op, vol(xs))?,
        xx: u(op, xs[0])?,
        xy: u(op, xs[1])?,
        xz: u(op, xs[2])?,
        kx: u(op, k[0])?,
        ky: u(op, k[1])?,
        kz: u(op, k[2])?,
        kv: u(op, kv)?,
        co: u(op, co)?,
        oy: u(op, os[1])?,
        oz: u(op, os[2])?,
        ov: u(op, vol(os))?,
        ..Default::default()
    })
}
