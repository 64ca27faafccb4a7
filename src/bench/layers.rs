//! Per-layer convolution timings: every distinct convolution / transposed-convolution shape of
//! VNet (batch 4, 112×112×80) and UNet (batch 24, 256×256), forward, input gradient and
//! weight gradient, each validated once before it is timed.
//!
//! `full = false` runs the same layer list at a tiny scale (VNet batch 1 on 16×16×16, UNet
//! batch 2 on 32×32) so that CI can run it on a software adapter; there each pass is compared
//! with its f64 twin. At full size each pass is checked for finiteness and on 16 sampled
//! elements recomputed in f64 on the CPU.
//!
//! Timing: `ms` is the mean wall time of `reps` back-to-back calls with one sync at the end;
//! then each of `reps` calls is a GPU timing session of its own (timestamp queries, see
//! [`Gpu::timing_begin`]) and `gpu_ms` / `gpu_busy_ms` are the medians of their spans / busy
//! times (null without `TIMESTAMP_QUERY`).
//!
//! FLOPs of a pass = 2 · (multiply-adds of the forward): 2·N·out_voxels·Co·Ci·k³ for a
//! convolution, 2·N·in_voxels·Ci·Co·k³ for a transposed one (the same products).

use super::step::gpu_medians;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops;
use crate::reference;
use crate::tensor::Tensor;
use std::sync::Arc;
use std::time::Instant;

/// One timed pass of one layer shape.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerRow {
    pub net: String,
    pub layer: String,
    pub shape: String,
    /// `fwd`, `bwd_input` or `bwd_weight`.
    pub pass: String,
    /// Mean wall time of one pass (submit + wait included).
    pub ms: f64,
    pub gflop: f64,
    /// `gflop` over `ms`.
    pub gflops: f64,
    /// Median GPU span of one pass from timestamps (null without them).
    pub gpu_ms: Option<f64>,
    /// Median GPU busy time of one pass (null without timestamps).
    pub gpu_busy_ms: Option<f64>,
    /// `gflop` over `gpu_ms` (null without it).
    pub gpu_gflops: Option<f64>,
}

impl LayerRow {
    /// The time the table's GFLOP/s come from: the GPU span when measured, else the wall.
    pub fn best_ms(&self) -> f64 {
        self.gpu_ms.unwrap_or(self.ms)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Conv3d,
    Conv2d,
    /// Transposed 3D convolution, kernel == stride.
    ConvT3d,
}

/// One layer shape: input [n, ci, spatial], kernel k (cubic / square), stride, padding.
#[derive(Clone, Debug)]
struct Layer {
    net: &'static str,
    name: String,
    kind: Kind,
    n: usize,
    ci: usize,
    co: usize,
    spatial: Vec<usize>,
    k: usize,
    s: usize,
    p: usize,
}

impl Layer {
    fn x_shape(&self) -> Vec<usize> {
        let mut v = vec![self.n, self.ci];
        v.extend(&self.spatial);
        v
    }
    fn w_shape(&self) -> Vec<usize> {
        let dims = if self.kind == Kind::Conv2d { 2 } else { 3 };
        let mut v = match self.kind {
            Kind::ConvT3d => vec![self.ci, self.co],
            _ => vec![self.co, self.ci],
        };
        v.extend(std::iter::repeat_n(self.k, dims));
        v
    }
    fn y_shape(&self) -> Vec<usize> {
        let mut v = vec![self.n, self.co];
        match self.kind {
            Kind::ConvT3d => v.extend(self.spatial.iter().map(|&x| x * self.s)),
            _ => v.extend(
                self.spatial
                    .iter()
                    .map(|&x| (x + 2 * self.p - self.k) / self.s + 1),
            ),
        }
        v
    }
    /// Multiply-adds of the forward.
    fn macs(&self) -> f64 {
        let kv = self.k.pow(self.spatial.len() as u32) as f64;
        let vox: usize = match self.kind {
            Kind::ConvT3d => self.spatial.iter().product(),
            _ => self.y_shape()[2..].iter().product(),
        };
        self.n as f64 * vox as f64 * self.co as f64 * self.ci as f64 * kv
    }
    fn describe(&self) -> String {
        let mut s = format!("x {:?} w {:?} s{}", self.x_shape(), self.w_shape(), self.s);
        if self.kind != Kind::ConvT3d {
            s.push_str(&format!(" p{}", self.p));
        }
        s
    }
}

/// Every distinct conv shape of VNet (16 filters, 1 channel in, 2 classes) at batch `n` on
/// input patches of size `sp` (halved at each of the four levels).
fn vnet_layers(n: usize, sp: [usize; 3]) -> Vec<Layer> {
    let at = |lvl: u32| sp.map(|v| v >> lvl).to_vec();
    let conv = |name: &str, ci, co, lvl, k, s, p| Layer {
        net: "vnet",
        name: name.to_string(),
        kind: Kind::Conv3d,
        n,
        ci,
        co,
        spatial: at(lvl),
        k,
        s,
        p,
    };
    let up = |name: &str, ci, co, lvl| Layer {
        net: "vnet",
        name: name.to_string(),
        kind: Kind::ConvT3d,
        n,
        ci,
        co,
        spatial: at(lvl),
        k: 2,
        s: 2,
        p: 0,
    };
    vec![
        conv("block_one conv3 1->16", 1, 16, 0, 3, 1, 1),
        conv("block_one_dw k2s2 16->32", 16, 32, 0, 2, 2, 0),
        conv("block_two/eight conv3 32", 32, 32, 1, 3, 1, 1),
        conv("block_two_dw k2s2 32->64", 32, 64, 1, 2, 2, 0),
        conv("block_three/seven conv3 64", 64, 64, 2, 3, 1, 1),
        conv("block_three_dw k2s2 64->128", 64, 128, 2, 2, 2, 0),
        conv("block_four/six conv3 128", 128, 128, 3, 3, 1, 1),
        conv("block_four_dw k2s2 128->256", 128, 256, 3, 2, 2, 0),
        conv("block_five conv3 256", 256, 256, 4, 3, 1, 1),
        up("block_five_up convT 256->128", 256, 128, 4),
        up("block_six_up convT 128->64", 128, 64, 3),
        up("block_seven_up convT 64->32", 64, 32, 2),
        up("block_eight_up convT 32->16", 32, 16, 1),
        conv("block_nine conv3 16", 16, 16, 0, 3, 1, 1),
        conv("out_conv conv1 16->2", 16, 2, 0, 1, 1, 0),
    ]
}

/// Every distinct conv shape of UNet (channels 16..256, 1 channel in, 4 classes).
fn unet_layers(n: usize, hw: usize) -> Vec<Layer> {
    let conv = |name: &str, ci, co, lvl: u32, k, p| Layer {
        net: "unet",
        name: name.to_string(),
        kind: Kind::Conv2d,
        n,
        ci,
        co,
        spatial: vec![hw >> lvl, hw >> lvl],
        k,
        s: 1,
        p,
    };
    vec![
        conv("in_conv conv3 1->16", 1, 16, 0, 3, 1),
        conv("in_conv/up4 conv3 16->16", 16, 16, 0, 3, 1),
        conv("down1 conv3 16->32", 16, 32, 1, 3, 1),
        conv("down1/up3 conv3 32->32", 32, 32, 1, 3, 1),
        conv("down2 conv3 32->64", 32, 64, 2, 3, 1),
        conv("down2/up2 conv3 64->64", 64, 64, 2, 3, 1),
        conv("down3 conv3 64->128", 64, 128, 3, 3, 1),
        conv("down3/up1 conv3 128->128", 128, 128, 3, 3, 1),
        conv("down4 conv3 128->256", 128, 256, 4, 3, 1),
        conv("down4 conv3 256->256", 256, 256, 4, 3, 1),
        conv("up1 conv1 256->128", 256, 128, 4, 1, 0),
        conv("up1 conv3 256->128", 256, 128, 3, 3, 1),
        conv("up2 conv1 128->64", 128, 64, 3, 1, 0),
        conv("up2 conv3 128->64", 128, 64, 2, 3, 1),
        conv("up3 conv1 64->32", 64, 32, 2, 1, 0),
        conv("up3 conv3 64->32", 64, 32, 1, 3, 1),
        conv("up4 conv1 32->16", 32, 16, 1, 1, 0),
        conv("up4 conv3 32->16", 32, 16, 0, 3, 1),
        conv("out_conv conv3 16->4", 16, 4, 0, 3, 1),
    ]
}

/// The benchmark's layer list.
fn layers(full: bool) -> Vec<Layer> {
    let mut v = if full {
        vnet_layers(4, [112, 112, 80])
    } else {
        vnet_layers(1, [16, 16, 16])
    };
    v.extend(if full {
        unet_layers(24, 256)
    } else {
        unet_layers(2, 32)
    });
    v
}

/// Deterministic values in [-0.5, 0.5) (a cheap hash: full-size inputs have 10^8 elements).
fn values(seed: u64, n: usize) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let mut h = (i ^ (seed << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^= h >> 29;
            h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            h ^= h >> 32;
            (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// The three passes of one layer on the GPU (off the tape).
struct Passes<'a> {
    l: &'a Layer,
    x: Tensor,
    w: Tensor,
    b: Tensor,
    g: Tensor,
}

impl Passes<'_> {
    fn run(&self, pass: &str) -> Result<Tensor> {
        let (l, xs, ws) = (self.l, self.l.x_shape(), self.l.w_shape());
        match (l.kind, pass) {
            (Kind::Conv3d, "fwd") => ops::conv3d(&self.x, &self.w, Some(&self.b), l.s, l.p),
            (Kind::Conv3d, "bwd_input") => ops::conv3d_bwd_input(&self.g, &self.w, &xs, l.s, l.p),
            (Kind::Conv3d, _) => ops::conv3d_bwd_weight(&self.g, &self.x, &ws, l.s, l.p),
            (Kind::Conv2d, "fwd") => ops::conv2d(&self.x, &self.w, Some(&self.b), l.s, l.p),
            (Kind::Conv2d, "bwd_input") => ops::conv2d_bwd_input(&self.g, &self.w, &xs, l.s, l.p),
            (Kind::Conv2d, _) => ops::conv2d_bwd_weight(&self.g, &self.x, &ws, l.s, l.p),
            (Kind::ConvT3d, "fwd") => ops::conv_transpose3d(&self.x, &self.w, Some(&self.b), l.s),
            (Kind::ConvT3d, "bwd_input") => {
                ops::conv_transpose3d_bwd_input(&self.g, &self.w, &xs, l.s)
            }
            (Kind::ConvT3d, _) => ops::conv_transpose3d_bwd_weight(&self.g, &self.x, &ws, l.s),
        }
    }
}

/// The f64 twin of a pass on the host data (tiny scale).
fn twin(l: &Layer, pass: &str, x: &[f64], w: &[f64], b: &[f64], g: &[f64]) -> Vec<f64> {
    let (xs, ws) = (l.x_shape(), l.w_shape());
    match (l.kind, pass) {
        (Kind::Conv3d, "fwd") => reference::conv3d(x, &xs, w, &ws, Some(b), l.s, l.p),
        (Kind::Conv3d, "bwd_input") => reference::conv3d_bwd_input(g, w, &ws, &xs, l.s, l.p),
        (Kind::Conv3d, _) => reference::conv3d_bwd_weight(g, x, &xs, &ws, l.s, l.p),
        (Kind::Conv2d, "fwd") => reference::conv2d(x, &xs, w, &ws, Some(b), l.s, l.p),
        (Kind::Conv2d, "bwd_input") => reference::conv2d_bwd_input(g, w, &ws, &xs, l.s, l.p),
        (Kind::Conv2d, _) => reference::conv2d_bwd_weight(g, x, &xs, &ws, l.s, l.p),
        (Kind::ConvT3d, "fwd") => reference::conv_transpose3d(x, &xs, w, &ws, Some(b), l.s),
        (Kind::ConvT3d, "bwd_input") => reference::conv_transpose3d_bwd_input(g, w, &ws, &xs, l.s),
        (Kind::ConvT3d, _) => reference::conv_transpose3d_bwd_weight(g, x, &xs, &ws, l.s),
    }
}

/// A convolution's geometry on three spatial axes (2D lifted to a unit leading axis), for
/// recomputing single elements at full size.
struct G3 {
    n: usize,
    ci: usize,
    co: usize,
    x: [usize; 3],
    k: [usize; 3],
    s: [usize; 3],
    p: [usize; 3],
    o: [usize; 3],
}

impl G3 {
    /// The convolution itself (Conv3d/Conv2d) or the one a transposed conv is the adjoint of
    /// (its input gradient): x' = the transposed output, w [Ci, Co, k] read as [Co', Ci', k].
    fn of(l: &Layer) -> G3 {
        let lift = |v: &[usize], one: usize| {
            if v.len() == 2 {
                [one, v[0], v[1]]
            } else {
                [v[0], v[1], v[2]]
            }
        };
        let kk = vec![l.k; l.spatial.len()];
        let (k, s, p) = (
            lift(&kk, 1),
            lift(&vec![l.s; kk.len()], 1),
            lift(&vec![l.p; kk.len()], 0),
        );
        match l.kind {
            Kind::ConvT3d => {
                let ys = l.y_shape();
                let x = lift(&ys[2..], 1);
                G3 {
                    n: l.n,
                    ci: l.co,
                    co: l.ci,
                    x,
                    k,
                    s,
                    p,
                    o: lift(&l.spatial, 1),
                }
            }
            _ => {
                let x = lift(&l.spatial, 1);
                let o = [0, 1, 2].map(|a| (x[a] + 2 * p[a] - k[a]) / s[a] + 1);
                G3 {
                    n: l.n,
                    ci: l.ci,
                    co: l.co,
                    x,
                    k,
                    s,
                    p,
                    o,
                }
            }
        }
    }

    fn xi(&self, n: usize, c: usize, i: [usize; 3]) -> usize {
        (((n * self.ci + c) * self.x[0] + i[0]) * self.x[1] + i[1]) * self.x[2] + i[2]
    }
    fn yi(&self, n: usize, c: usize, o: [usize; 3]) -> usize {
        (((n * self.co + c) * self.o[0] + o[0]) * self.o[1] + o[1]) * self.o[2] + o[2]
    }
    fn wi(&self, co: usize, ci: usize, d: [usize; 3]) -> usize {
        (((co * self.ci + ci) * self.k[0] + d[0]) * self.k[1] + d[1]) * self.k[2] + d[2]
    }
    /// Input coordinate of output o and kernel offset d, when inside the input.
    fn input_at(&self, o: [usize; 3], d: [usize; 3]) -> Option<[usize; 3]> {
        let mut i = [0; 3];
        for a in 0..3 {
            let v = (o[a] * self.s[a] + d[a]) as isize - self.p[a] as isize;
            if v < 0 || v >= self.x[a] as isize {
                return None;
            }
            i[a] = v as usize;
        }
        Some(i)
    }
    fn kernel_offsets(&self) -> impl Iterator<Item = [usize; 3]> + '_ {
        let [k0, k1, k2] = self.k;
        (0..k0).flat_map(move |a| (0..k1).flat_map(move |b| (0..k2).map(move |c| [a, b, c])))
    }
    fn outputs(&self) -> impl Iterator<Item = [usize; 3]> + '_ {
        let [o0, o1, o2] = self.o;
        (0..o0).flat_map(move |a| (0..o1).flat_map(move |b| (0..o2).map(move |c| [a, b, c])))
    }
    fn split(idx: usize, dims: [usize; 3]) -> [usize; 3] {
        [
            idx / (dims[1] * dims[2]),
            (idx / dims[2]) % dims[1],
            idx % dims[2],
        ]
    }

    /// y[idx] (without bias) and the sum of |products|.
    fn fwd_at(&self, x: &[f32], w: &[f32], idx: usize) -> (f64, f64) {
        let ov = self.o.iter().product::<usize>();
        let (nc, o) = (idx / ov, Self::split(idx % ov, self.o));
        let (n, co) = (nc / self.co, nc % self.co);
        let (mut acc, mut abs) = (0f64, 0f64);
        for ci in 0..self.ci {
            for d in self.kernel_offsets() {
                if let Some(i) = self.input_at(o, d) {
                    let t = x[self.xi(n, ci, i)] as f64 * w[self.wi(co, ci, d)] as f64;
                    acc += t;
                    abs += t.abs();
                }
            }
        }
        (acc, abs)
    }
    /// gx[idx] from g.
    fn bwd_input_at(&self, g: &[f32], w: &[f32], idx: usize) -> (f64, f64) {
        let xv = self.x.iter().product::<usize>();
        let (nc, i) = (idx / xv, Self::split(idx % xv, self.x));
        let (n, ci) = (nc / self.ci, nc % self.ci);
        let (mut acc, mut abs) = (0f64, 0f64);
        for co in 0..self.co {
            for d in self.kernel_offsets() {
                let mut o = [0; 3];
                let mut ok = true;
                for a in 0..3 {
                    let t = (i[a] + self.p[a]) as isize - d[a] as isize;
                    if t < 0
                        || !(t as usize).is_multiple_of(self.s[a])
                        || t as usize / self.s[a] >= self.o[a]
                    {
                        ok = false;
                        break;
                    }
                    o[a] = t as usize / self.s[a];
                }
                if ok {
                    let t = g[self.yi(n, co, o)] as f64 * w[self.wi(co, ci, d)] as f64;
                    acc += t;
                    abs += t.abs();
                }
            }
        }
        (acc, abs)
    }
    /// gw[idx] from g and x.
    fn bwd_weight_at(&self, g: &[f32], x: &[f32], idx: usize) -> (f64, f64) {
        let kv = self.k.iter().product::<usize>();
        let (cc, d) = (idx / kv, Self::split(idx % kv, self.k));
        let (co, ci) = (cc / self.ci, cc % self.ci);
        let (mut acc, mut abs) = (0f64, 0f64);
        for n in 0..self.n {
            for o in self.outputs() {
                if let Some(i) = self.input_at(o, d) {
                    let t = g[self.yi(n, co, o)] as f64 * x[self.xi(n, ci, i)] as f64;
                    acc += t;
                    abs += t.abs();
                }
            }
        }
        (acc, abs)
    }
}

/// Full size: every value finite and 16 sampled elements equal to their f64 recomputation
/// within 1e-4 of the sum of |products| (plus 1e-6).
fn spot_check(
    l: &Layer,
    pass: &str,
    got: &[f32],
    x: &[f32],
    w: &[f32],
    b: &[f32],
    g: &[f32],
) -> Result<()> {
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        return Err(Error::msg(format!(
            "bench: {} {pass}: non-finite value at {i}",
            l.name
        )));
    }
    let geo = G3::of(l);
    let t = l.kind == Kind::ConvT3d;
    for s in 0..16usize {
        let idx = (s * 2_654_435_761 + 12_345) % got.len();
        // A transposed conv's passes are the adjoint conv's: fwd = its input gradient (plus
        // bias), bwd_input = its forward, bwd_weight = its weight gradient with (x, g) swapped.
        let (want, abs) = match (pass, t) {
            ("fwd", false) => geo.fwd_at(x, w, idx),
            ("fwd", true) => geo.bwd_input_at(x, w, idx),
            ("bwd_input", false) => geo.bwd_input_at(g, w, idx),
            ("bwd_input", true) => geo.fwd_at(g, w, idx),
            (_, false) => geo.bwd_weight_at(g, x, idx),
            (_, true) => geo.bwd_weight_at(x, g, idx),
        };
        let want = if pass == "fwd" {
            let vox: usize = l.y_shape()[2..].iter().product();
            want + b[(idx / vox) % l.co] as f64
        } else {
            want
        };
        let err = (got[idx] as f64 - want).abs();
        if err > 1e-4 * abs + 1e-6 {
            return Err(Error::msg(format!(
                "bench: {} {pass}: element {idx} is {} but {want} in f64 (error {err:.3e}, sum |terms| {abs:.3e})",
                l.name, got[idx]
            )));
        }
    }
    Ok(())
}

/// Time every conv layer shape of VNet and UNet, forward and both backwards: `full` at the
/// training sizes (VNet batch 4 on 112×112×80, UNet batch 24 on 256×256), otherwise at a tiny
/// scale. Each pass is validated once, warmed up, then `reps` runs are timed on the wall
/// clock (the GPU is synchronised inside the timed region) and `reps` more each on the GPU.
pub fn conv_layer_table(gpu: &Arc<Gpu>, full: bool, reps: usize) -> Result<Vec<LayerRow>> {
    conv_layer_table_only(gpu, full, reps, &[])
}

/// [`conv_layer_table`] restricted to the layers whose "net layer" name contains one of
/// `only` (all of them when `only` is empty).
pub fn conv_layer_table_only(
    gpu: &Arc<Gpu>,
    full: bool,
    reps: usize,
    only: &[&str],
) -> Result<Vec<LayerRow>> {
    let reps = reps.max(1);
    let mut rows = vec![];
    for (li, l) in layers(full).iter().enumerate() {
        let full_name = format!("{} {}", l.net, l.name);
        if !only.is_empty() && !only.iter().any(|o| full_name.contains(o)) {
            continue;
        }
        let (xs, ws, ys) = (l.x_shape(), l.w_shape(), l.y_shape());
        let xh = values(3 * li as u64 + 1, xs.iter().product());
        let wscale = 1.0 / ((l.ci * l.k.pow(l.spatial.len() as u32)) as f32).sqrt();
        let wh: Vec<f32> = values(3 * li as u64 + 2, ws.iter().product())
            .iter()
            .map(|v| v * wscale)
            .collect();
        let bh = values(3 * li as u64 + 3, l.co);
        let gh = values(3 * li as u64 + 1000, ys.iter().product());
        let passes = Passes {
            l,
            x: Tensor::from_f32(gpu, &xh, &xs)?,
            w: Tensor::from_f32(gpu, &wh, &ws)?,
            b: Tensor::from_f32(gpu, &bh, &[l.co])?,
            g: Tensor::from_f32(gpu, &gh, &ys)?,
        };
        let f64s = |v: &[f32]| reference::to_f64(v);
        for pass in ["fwd", "bwd_input", "bwd_weight"] {
            let got = crate::autograd::no_grad(|| passes.run(pass))?.to_f32()?;
            if full {
                spot_check(l, pass, &got, &xh, &wh, &bh, &gh)?;
            } else {
                let want = twin(l, pass, &f64s(&xh), &f64s(&wh), &f64s(&bh), &f64s(&gh));
                let want32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
                crate::golden::check_rel_l2(&format!("{} {pass}", l.name), &got, &want32, 1e-5)
                    .map_err(|e| Error::msg(format!("bench: {e}")))?;
            }
            crate::autograd::no_grad(|| -> Result<()> {
                for _ in 0..2 {
                    passes.run(pass)?;
                }
                gpu.sync()?;
                let t0 = Instant::now();
                for _ in 0..reps {
                    passes.run(pass)?;
                }
                gpu.sync()?;
                let ms = t0.elapsed().as_secs_f64() * 1e3 / reps as f64;
                let mut gt = vec![];
                for _ in 0..reps {
                    gpu.timing_begin();
                    let r = passes.run(pass);
                    let t = gpu.timing_end();
                    drop(r?);
                    gt.push(t?);
                }
                let (gpu_ms, gpu_busy_ms) = gpu_medians(&gt);
                let gflop = 2.0 * l.macs() / 1e9;
                rows.push(LayerRow {
                    net: l.net.to_string(),
                    layer: l.name.clone(),
                    shape: l.describe(),
                    pass: pass.to_string(),
                    ms,
                    gflop,
                    gflops: gflop / (ms / 1e3),
                    gpu_ms,
                    gpu_busy_ms,
                    gpu_gflops: gpu_ms.map(|g| gflop / (g / 1e3)),
                });
                Ok(())
            })?;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_lists_have_the_networks_shapes() {
        let full = layers(true);
        assert_eq!(full.len(), 15 + 19);
        // VNet: ≈ 80 GFLOP per 112×112×80 forward at batch 1 (SSNET.md); the layer list holds
        // each distinct shape once, so sum with the repeat counts of the network.
        let repeats = [1, 1, 4, 1, 6, 1, 6, 1, 3, 1, 1, 1, 1, 1, 1];
        let vnet: f64 = full
            .iter()
            .filter(|l| l.net == "vnet")
            .zip(repeats)
            .map(|(l, r)| l.macs() * 2.0 * r as f64)
            .sum();
        let per_patch = vnet / 4.0 / 1e9;
        assert!(
            (60.0..100.0).contains(&per_patch),
            "VNet forward {per_patch} GFLOP per patch"
        );
        for l in &full {
            assert!(l.y_shape().iter().all(|&d| d > 0), "{l:?}");
        }
        for l in layers(false) {
            assert!(l.y_shape()[2..].iter().all(|&d| d > 0), "{l:?}");
        }
    }
}
