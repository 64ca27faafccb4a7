#!/usr/bin/env python3
"""Plain-PyTorch SS-Net benchmark: the baseline that `ssnet bench` is compared against.

Written for this project (not the reference code): VNet and UNet with the reference's
state_dict names, the projection/prediction heads and class selectors, VAT (xi 10, one power
iteration, BatchNorm running statistics frozen in the perturbed passes), the prototype memory
(32 rows per class, ascending sort as the reference does) and the class-to-class contrastive
loss, put together into one SS-Net training iteration exactly as /work/shared/design/SSNET.md
describes it:

    loss = dice + w * (lds + 0.1 * (cl_l + cl_u)),  SGD lr 0.01, momentum 0.9, wd 1e-4

What it measures on the current CUDA device (or on the CPU with `--device cpu`, a smoke test):

* `iteration3d`: one SS-Net training iteration with VNet, batch 4 (2 labelled + 2 unlabelled)
  of 112x112x80 (`--size full`) or 4x1x16x16x16 (`--size tiny`);
* `iteration2d`: the same with UNet, batch 24 (12 + 12) of 256x256 (tiny: 4x1x32x32);
* `inference3d`: VNet, eval mode, no autograd, one 112x112x80 patch (tiny: 16^3):
  forward + softmax, as a sliding-window step does;
* `admt3d` / `admt2d`: one step of the OFFICIAL AD-MT code (imported from `--admt-code DIR`,
  see tools/bench_admt_torch.py), LA settings with its VNet on the `iteration3d` batch, ACDC
  settings with its UNet on the `iteration2d` batch, split unlabelled + labelled = half + half;
  `peak_memory_admt3d_bytes` / `peak_memory_admt2d_bytes` as for SS-Net;
* `peak_memory_3d_bytes` / `peak_memory_2d_bytes`: torch.cuda.max_memory_allocated over the
  timed iterations (statistics reset after the warm-up; 0 on the CPU);
* `layers`: every distinct convolution / transposed-convolution shape of both nets
  (VNet at batch 4 on 112x112x80, UNet at batch 24 on 256x256; tiny: VNet batch 1 on 16^3,
  UNet batch 2 on 32x32), each of the passes `fwd`, `bwd_input`, `bwd_weight` timed
  separately (the backward passes through aten.convolution_backward with a one-hot
  output mask, so each computes only its own gradient).

Conventions (the Rust `ssnet bench` uses the same ones):

* FLOPs of a convolution = 2 * N * out_voxels * Co * Ci * k^d (2 per multiply-add); of a
  transposed convolution 2 * N * in_voxels * Ci * Co * k^d (the same products counted from the
  input side). A layer row's `gflop` is that of the forward; its two backward passes do the
  same number of multiply-adds and are given the same `gflop`.
* gflop of an AD-MT step = the two teachers' forwards on the U unlabelled samples + the
  student's forward on L + 2U + its backward (weight gradients: one forward's worth; input
  gradients: another, less the first convolution's, which the images do not need):
  2 F(U) + 3 F(L + 2U) - F_first(L + 2U), F counted on the official networks.
* gflop of an iteration = 9 x the network's forward convolution FLOPs at that batch:
  forward (1) + the VAT's three forwards (3) + its input-only backward (1) + the two full
  backwards of the final loss (2 x 2) ~ 9 forwards. Heads, losses, BatchNorm etc. are not
  counted. gflop of inference = 1 x the forward.
* `ms` is wall-clock time (from a synchronised device to the end of a synchronisation after
  the work); `gpu_ms` the GPU time between CUDA events recorded around the same work (ssnet
  bench: GPU timestamp queries from the first compute pass's beginning to the last one's end,
  the same measure); `gpu_busy_ms` is null here (ssnet bench: the sum of its compute passes,
  idle gaps excluded); `gpu_timer` says how GPU times were taken ("torch.cuda.Event", null on
  the CPU). `gflops` = gflop / (ms / 1000), `gpu_gflops` = gflop / (gpu_ms / 1000).
  `tuned`: whether convolution algorithms were autotuned (here `--cudnn-benchmark`; ssnet
  bench: `--tune`).
  Iterations and inference report the medians over `--reps` timed runs; layer passes the
  mean wall time over `--layer-reps` back-to-back calls and the median of the CUDA-event
  times of each of `--layer-reps` more calls.
* Layer names are the reference state_dict prefixes of the first module (in forward order)
  with that shape, e.g. `encoder.block_two.conv.0`, `decoder.block_five_up.conv.0`,
  `encoder.in_conv.conv_conv.0`, `decoder.up1.conv1x1`. The shape string is
  `<input N x Ci x spatial> k<k>[ s<stride>][ transposed] -> <Co>`; padding is SS-Net's:
  k3 pads 1, k1 and k2 (stride 2) pad 0. Example: `4x32x56x56x40 k3 -> 32`.

Synthetic batch (the same as the Rust bench): x ~ U[0,1); the labelled samples' labels are a
centred ball of radius 0.3 (in units of the patch side), split into concentric shells of
classes 1..C-1 (3D: one foreground class). The prototype memory starts empty, as in the
reference, and persists across the validation, warm-up and timed iterations.

Timing: the wall clock and CUDA events around each timed region with synchronisation before
and after; the first iteration of each net is a validation run (every loss term must be
finite) and is not timed, then `--warmup` untimed iterations, then `--reps` timed ones.

Rows: `bench_torch.py [ROW ...]` runs only those (iteration3d iteration2d inference3d admt3d
admt2d layers; default all); a row not run is null in the JSON (layers: []). The AD-MT rows
need `--admt-code DIR` (or ADMT_CODE): without it they are refused with the way to get it.

`--tf32 on|off` sets both cuDNN's and cuBLAS's TF32 switches; without it PyTorch's defaults
stay (convolutions TF32, matmuls full FP32), and the JSON records whether convolutions ran
with TF32 allowed. The JSON (printed as the last line of stdout, and written to `--json FILE`)
has exactly the keys of `ssnet bench --json`.
"""

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - reported to the user
    sys.exit("bench_torch.py needs PyTorch (pip install torch); it is not installed for "
             + sys.executable)


# --------------------------------------------------------------------------------------
# Networks. Attribute names reproduce the reference state_dict keys.
# --------------------------------------------------------------------------------------

class VStage(nn.Module):
    """`n` x (Conv3d k3 p1 -> BatchNorm3d -> ReLU) in a Sequential called `conv`."""

    def __init__(self, n, cin, cout):
        super().__init__()
        mods = []
        for i in range(n):
            mods.append(nn.Conv3d(cout if i else cin, cout, kernel_size=3, padding=1))
            mods.append(nn.BatchNorm3d(cout))
            mods.append(nn.ReLU(inplace=True))
        self.conv = nn.Sequential(*mods)

    def forward(self, x):
        return self.conv(x)


class VResample(nn.Module):
    """Conv3d k2 s2 (down) or ConvTranspose3d k2 s2 (up) -> BatchNorm3d -> ReLU."""

    def __init__(self, cin, cout, up):
        super().__init__()
        op = nn.ConvTranspose3d if up else nn.Conv3d
        self.conv = nn.Sequential(op(cin, cout, kernel_size=2, stride=2),
                                  nn.BatchNorm3d(cout), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.conv(x)


_LEVELS = ["one", "two", "three", "four", "five"]


class VNetEncoder(nn.Module):
    STAGES = [1, 2, 3, 3, 3]

    def __init__(self, in_ch=1, f=16):
        super().__init__()
        widths = [f, 2 * f, 4 * f, 8 * f, 16 * f]
        for lvl, name in enumerate(_LEVELS):
            cin = in_ch if lvl == 0 else widths[lvl]
            setattr(self, "block_" + name, VStage(self.STAGES[lvl], cin, widths[lvl]))
            if lvl < 4:
                setattr(self, "block_%s_dw" % name, VResample(widths[lvl], widths[lvl + 1], up=False))
        self.dropout = nn.Dropout3d(p=0.5)

    def forward(self, x):
        skips = []
        for lvl, name in enumerate(_LEVELS):
            x = getattr(self, "block_" + name)(x)
            if lvl < 4:
                skips.append(x)
                x = getattr(self, "block_%s_dw" % name)(x)
        return skips, self.dropout(x)


class VNetDecoder(nn.Module):
    # (level, stage name, convs in the stage); the up block of a stage brings it one level up
    STAGES = [(4, "five", 0), (3, "six", 3), (2, "seven", 3), (1, "eight", 2), (0, "nine", 1)]

    def __init__(self, n_classes=2, f=16):
        super().__init__()
        widths = [f, 2 * f, 4 * f, 8 * f, 16 * f]
        for lvl, name, n in self.STAGES:
            if n:
                setattr(self, "block_" + name, VStage(n, widths[lvl], widths[lvl]))
            if lvl > 0:
                setattr(self, "block_%s_up" % name, VResample(widths[lvl], widths[lvl - 1], up=True))
        self.out_conv = nn.Conv3d(f, n_classes, kernel_size=1)
        self.dropout = nn.Dropout3d(p=0.5)

    def forward(self, skips, x):
        for lvl, name, n in self.STAGES:
            if n:
                x = getattr(self, "block_" + name)(x)
            if lvl > 0:
                x = getattr(self, "block_%s_up" % name)(x) + skips[lvl - 1]
        emb = self.dropout(x)
        return self.out_conv(emb), emb


def _mlp(cin, hidden, cout, act):
    return nn.Sequential(nn.Linear(cin, hidden), nn.BatchNorm1d(hidden), act, nn.Linear(hidden, cout))


class SSNetHeads(nn.Module):
    """Projection/prediction heads and the per-class selectors (added on top of a net)."""

    def _add_heads(self, n_classes, dim_in=16, feat=32):
        self.n_classes = n_classes
        self.projection_head = _mlp(dim_in, feat, feat, nn.ReLU(inplace=True))
        self.prediction_head = _mlp(feat, feat, feat, nn.ReLU(inplace=True))
        for c in range(n_classes):
            setattr(self, "contrastive_class_selector_%d" % c,
                    _mlp(feat, feat, 1, nn.LeakyReLU(0.2, inplace=True)))
        for c in range(n_classes):
            setattr(self, "contrastive_class_selector_memory%d" % c,
                    _mlp(feat, feat, 1, nn.LeakyReLU(0.2, inplace=True)))

    def selector(self, c):
        return getattr(self, "contrastive_class_selector_%d" % c)

    def memory_selector(self, c):
        return getattr(self, "contrastive_class_selector_memory%d" % c)


class VNet(SSNetHeads):
    """VNet, 16 filters, BatchNorm, Dropout3d(0.5) on block_five and block_nine outputs."""

    def __init__(self, in_ch=1, n_classes=2, f=16):
        super().__init__()
        self.encoder = VNetEncoder(in_ch, f)
        self.decoder = VNetDecoder(n_classes, f)
        self._add_heads(n_classes)

    def forward(self, x):
        skips, bottom = self.encoder(x)
        return self.decoder(skips, bottom)


class UConv(nn.Module):
    """conv3x3 -> BN -> LeakyReLU(0.01) -> Dropout(p) -> conv3x3 -> BN -> LeakyReLU(0.01)."""

    def __init__(self, cin, cout, p):
        super().__init__()
        self.conv_conv = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size=3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.01),
            nn.Dropout(p),
            nn.Conv2d(cout, cout, kernel_size=3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.01))

    def forward(self, x):
        return self.conv_conv(x)


class UDown(nn.Module):
    def __init__(self, cin, cout, p):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), UConv(cin, cout, p))

    def forward(self, x):
        return self.maxpool_conv(x)


class UUp(nn.Module):
    """conv1x1 (c_deep -> c_skip), bilinear x2 (align_corners), concat [skip, up], UConv."""

    def __init__(self, c_deep, c_skip, cout):
        super().__init__()
        self.conv1x1 = nn.Conv2d(c_deep, c_skip, kernel_size=1)
        self.conv = UConv(2 * c_skip, cout, 0.0)

    def forward(self, x, skip):
        up = F.interpolate(self.conv1x1(x), scale_factor=2, mode="bilinear", align_corners=True)
        return self.conv(torch.cat([skip, up], dim=1))


class UNetEncoder(nn.Module):
    def __init__(self, in_ch, ch, drop):
        super().__init__()
        self.in_conv = UConv(in_ch, ch[0], drop[0])
        for i in range(1, 5):
            setattr(self, "down%d" % i, UDown(ch[i - 1], ch[i], drop[i]))

    def forward(self, x):
        feats = [self.in_conv(x)]
        for i in range(1, 5):
            feats.append(getattr(self, "down%d" % i)(feats[-1]))
        return feats


class UNetDecoder(nn.Module):
    def __init__(self, ch, n_classes):
        super().__init__()
        for i in range(1, 5):
            setattr(self, "up%d" % i, UUp(ch[5 - i], ch[4 - i], ch[4 - i]))
        self.out_conv = nn.Conv2d(ch[0], n_classes, kernel_size=3, padding=1)

    def forward(self, feats):
        x = feats[4]
        for i in range(1, 5):
            x = getattr(self, "up%d" % i)(x, feats[4 - i])
        return self.out_conv(x), x


class UNet(SSNetHeads):
    CHANNELS = [16, 32, 64, 128, 256]
    DROPOUT = [0.05, 0.1, 0.2, 0.3, 0.5]

    def __init__(self, in_ch=1, n_classes=4):
        super().__init__()
        self.encoder = UNetEncoder(in_ch, self.CHANNELS, self.DROPOUT)
        self.decoder = UNetDecoder(self.CHANNELS, n_classes)
        self._add_heads(n_classes)

    def forward(self, x):
        return self.decoder(self.encoder(x))


# --------------------------------------------------------------------------------------
# SS-Net pieces
# --------------------------------------------------------------------------------------

class Task:
    """Per-dataset settings: classes, labelled batch size, VAT epsilon, loss weight w."""

    def __init__(self, dim, classes, labeled, eps, w):
        self.dim, self.classes, self.labeled, self.eps, self.w = dim, classes, labeled, eps, w


def consistency_weight(consistency, rampup, t):
    """The sigmoid ramp-up: consistency * exp(-5 (1 - min(t,R)/R)^2)."""
    if rampup == 0:
        return consistency
    phase = 1.0 - min(max(t, 0.0), rampup) / rampup
    return consistency * math.exp(-5.0 * phase * phase)


def l2_normalize_per_sample(d):
    norm = d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1)))
    return d / (norm + 1e-8)


def dist3d(p, q):
    """The binary Dice loss applied to whole two-channel tensors (SS-Net's VAT3d distance)."""
    return 1.0 - (2.0 * (p * q).sum() + 1e-8) / (p.sum() + q.sum() + 1e-8)


def soft_dice(p, t):
    """Mean over classes of 1 - (2 sum p t + 1e-10) / (sum t^2 + sum p^2 + 1e-10)."""
    dims = [0] + list(range(2, p.dim()))
    inter = (p * t).sum(dims)
    return (1.0 - (2.0 * inter + 1e-10) / ((t * t).sum(dims) + (p * p).sum(dims) + 1e-10)).mean()


def supervised_dice(prob_l, y, task):
    if task.dim == 3:
        p1 = prob_l[:, 1]
        t = (y == 1).to(p1.dtype)
        return 1.0 - (2.0 * (p1 * t).sum() + 1e-8) / (p1.sum() + t.sum() + 1e-8)
    onehot = F.one_hot(y, task.classes).movedim(-1, 1).to(prob_l.dtype)
    return soft_dice(prob_l, onehot)


@contextlib.contextmanager
def frozen_bn_stats(model):
    """Batch statistics still used, running statistics left untouched."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.track_running_stats for m in bns]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, s in zip(bns, saved):
            m.track_running_stats = s


def vat_lds(model, x, task, xi=10.0, rand_u=None):
    dist = dist3d if task.dim == 3 else soft_dice
    with torch.no_grad():
        target = torch.softmax(model(x)[0], dim=1)      # train mode: running stats move
    u = torch.rand_like(x) if rand_u is None else rand_u
    d = l2_normalize_per_sample(u - 0.5)
    with frozen_bn_stats(model):
        d.requires_grad_(True)
        adv = dist(torch.softmax(model(x + xi * d)[0], dim=1), target)
        (grad,) = torch.autograd.grad(adv, d)           # input-only backward
        d = l2_normalize_per_sample(grad)
        return dist(torch.softmax(model(x + task.eps * d)[0], dim=1), target)


class PrototypeMemory:
    """Up to `per_class` projected features per class, rebuilt each iteration."""

    def __init__(self, n_classes, per_class=32, keep="lowest"):
        self.rows = [None] * n_classes
        self.per_class = per_class
        self.keep = keep

    @torch.no_grad()
    def update(self, model, feats, labels):
        for c in range(len(self.rows)):
            fc = feats[labels == c]
            if fc.shape[0] == 0:
                continue
            if fc.shape[0] > self.per_class:
                score = torch.sigmoid(model.selector(c)(fc))[:, 0]    # train mode
                order = torch.sort(score, descending=(self.keep == "highest"))[1]
                fc = fc[order[: self.per_class]]
            self.rows[c] = fc.detach().clone()


def contrastive_loss(model, feats, labels, memory, n_classes):
    loss = feats.new_zeros(())
    for c in range(n_classes):
        mem = memory.rows[c]
        if mem is None or mem.shape[0] <= 1:
            continue
        fc = feats[labels == c]
        if fc.shape[0] <= 1:
            continue
        mem_n = F.normalize(mem, dim=1)
        dist = 1.0 - F.normalize(fc, dim=1) @ mem_n.t()                       # [m, n]
        a = torch.sigmoid(model.selector(c)(fc.detach()))                      # [m, 1]
        a = a * (a.shape[0] / a.sum(0))
        b = torch.sigmoid(model.memory_selector(c)(mem_n)).t()                # [1, n]
        b = b * (b.shape[0] / b.sum(0))    # the reference's quirk: b / b == 1 everywhere
        loss = loss + (dist * a * b).mean()
    return loss / n_classes


def ssnet_step(model, opt, memory, x, y, task, rand_u=None):
    """One SS-Net training iteration; returns the loss terms (detached).

    `rand_u`: VAT's uniform noise (drawn on the device when None)."""
    L = task.labeled
    model.train()
    logits, emb = model(x)
    prob = torch.softmax(logits, dim=1)
    pred_l = prob[:L].argmax(1)
    pseudo = prob[L:].argmax(1)
    correct = (pred_l == y) & (pred_l > 0)
    channels_last = emb.movedim(1, -1)                  # [N, spatial..., 16]
    emb_l, emb_u = channels_last[:L], channels_last[L:]
    with torch.no_grad():
        model.projection_head.eval()
        proj = model.projection_head(emb_l[correct])
        model.projection_head.train()
    memory.update(model, proj, y[correct])
    c = emb.shape[1]
    feat_l = model.prediction_head(model.projection_head(emb_l.reshape(-1, c)))
    cl_l = contrastive_loss(model, feat_l, y.reshape(-1), memory, task.classes)
    feat_u = model.prediction_head(model.projection_head(emb_u.reshape(-1, c)))
    cl_u = contrastive_loss(model, feat_u, pseudo.reshape(-1), memory, task.classes)
    with torch.no_grad():
        ce = F.cross_entropy(logits[:L], y)             # logged by the reference, not optimised
    dice = supervised_dice(prob[:L], y, task)
    lds = vat_lds(model, x, task, rand_u=rand_u)
    loss = dice + task.w * (lds + 0.1 * (cl_l + cl_u))
    opt.zero_grad(set_to_none=False)
    loss.backward()
    opt.step()
    return {"loss": loss.detach(), "dice": dice.detach(), "ce": ce, "lds": lds.detach(),
            "cl_l": cl_l.detach(), "cl_u": cl_u.detach(), "mask_rows": int(correct.sum())}


def synthetic_batch(shape, labeled, classes, device, gen):
    x = torch.rand(shape, generator=gen).to(device)
    spatial = shape[2:]
    axes = [((torch.arange(s, dtype=torch.float64) + 0.5) / s - 0.5) for s in spatial]
    grids = torch.meshgrid(*axes, indexing="ij")
    r = torch.sqrt(sum(g * g for g in grids))
    shell = (1 + (r * 10.0).floor().long() % (classes - 1))
    lab = torch.where(r < 0.3, shell, torch.zeros_like(shell))
    y = lab.unsqueeze(0).expand(labeled, *spatial).contiguous().to(device)
    return x, y


# --------------------------------------------------------------------------------------
# FLOP counting and the layer table
# --------------------------------------------------------------------------------------

CONV_TYPES = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose3d)


def conv_macs(mod, in_shape, out_shape):
    k = 1
    for v in mod.kernel_size:
        k *= v
    n = in_shape[0]
    if isinstance(mod, nn.ConvTranspose3d):
        vox = math.prod(in_shape[2:])
    else:
        vox = math.prod(out_shape[2:])
    return n * vox * mod.out_channels * (mod.in_channels // mod.groups) * k


def trace_convs(model_cls, model_kwargs, in_shape, device):
    """Every conv call of one forward, in order: (name, module, in_shape, out_shape).

    Runs on the meta device (shapes only) when possible, else for real without autograd."""
    def run(dev):
        with torch.device(dev) if dev == "meta" else contextlib.nullcontext():
            m = model_cls(**model_kwargs)
        m = m.to(dev).eval()
        calls = []
        names = {mod: name for name, mod in m.named_modules()}
        hooks = [mod.register_forward_hook(
            lambda mod, inp, out: calls.append((names[mod], mod, tuple(inp[0].shape), tuple(out.shape))))
            for mod in m.modules() if isinstance(mod, CONV_TYPES)]
        with torch.no_grad():
            m(torch.zeros(in_shape, device=dev))
        for h in hooks:
            h.remove()
        return calls
    try:
        return run("meta")
    except Exception:  # pragma: no cover - older PyTorch
        return run(device)


def forward_gflop(model_cls, model_kwargs, shape, device):
    one = [1] + list(shape[1:])
    macs = sum(conv_macs(m, i, o) for _, m, i, o in trace_convs(model_cls, model_kwargs, one, device))
    return 2.0 * macs * shape[0] / 1e9


def shape_string(mod, in_shape):
    k = mod.kernel_size[0]
    s = mod.stride[0]
    desc = "x".join(str(v) for v in in_shape) + " k%d" % k
    if s != 1:
        desc += " s%d" % s
    if isinstance(mod, nn.ConvTranspose3d):
        desc += " transposed"
    return desc + " -> %d" % mod.out_channels


def distinct_layers(net, model_cls, model_kwargs, in_shape, device):
    rows, seen = [], {}
    for name, mod, i, o in trace_convs(model_cls, model_kwargs, in_shape, device):
        key = (type(mod).__name__, i, mod.out_channels, mod.kernel_size, mod.stride, mod.padding)
        if key in seen:
            seen[key]["uses"] += 1
            continue
        row = {"net": net, "layer": name, "mod": mod, "in": i, "out": o, "uses": 1,
               "shape": shape_string(mod, i), "macs": conv_macs(mod, i, o)}
        seen[key] = row
        rows.append(row)
    return rows


class Clock:
    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn, calls=1):
        """(wall ms, GPU ms) of `calls` back-to-back calls of fn: the wall clock from a synced
        device to the end of a sync after the calls; the GPU time between CUDA events recorded
        before and after the calls (None on the CPU)."""
        self.sync()
        t0 = time.perf_counter()
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            return (time.perf_counter() - t0) * 1e3, start.elapsed_time(end)
        for _ in range(calls):
            fn()
        return (time.perf_counter() - t0) * 1e3, None

    def time_each(self, fn, calls):
        """GPU ms of each of `calls` back-to-back calls of fn (CUDA events around each, one
        sync at the end); None on the CPU."""
        if not self.cuda:
            return None
        self.sync()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(calls)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        events[-1][1].synchronize()
        return [start.elapsed_time(end) for start, end in events]


def layer_passes(row, device, gen):
    mod = row["mod"]
    transposed = isinstance(mod, nn.ConvTranspose3d)
    dims = len(mod.kernel_size)
    x = torch.randn(row["in"], generator=gen).to(device)
    wshape = ((mod.in_channels, mod.out_channels) if transposed else (mod.out_channels, mod.in_channels))
    fan_in = mod.in_channels * math.prod(mod.kernel_size)
    w = (torch.randn(wshape + tuple(mod.kernel_size), generator=gen) / math.sqrt(fan_in)).to(device)
    b = torch.zeros(mod.out_channels).to(device)
    gy = torch.randn(row["out"], generator=gen).to(device)
    stride, padding = list(mod.stride), list(mod.padding)
    dil, outpad = [1] * dims, [0] * dims
    if transposed:
        fwd_op = lambda: F.conv_transpose3d(x, w, b, stride=stride, padding=padding)
    else:
        conv = F.conv3d if dims == 3 else F.conv2d
        fwd_op = lambda: conv(x, w, b, stride=stride, padding=padding)

    def backward(mask):
        return lambda: torch.ops.aten.convolution_backward(
            gy, x, w, None, stride, padding, dil, transposed, outpad, 1, mask)

    return {"fwd": fwd_op, "bwd_input": backward([True, False, False]),
            "bwd_weight": backward([False, True, False])}


def bench_layers(rows, device, clock, warmup, reps, gen):
    out = []
    for row in rows:
        passes = layer_passes(row, device, gen)
        for pname in ("fwd", "bwd_input", "bwd_weight"):
            fn = passes[pname]
            res = fn()
            res = res if isinstance(res, torch.Tensor) else [t for t in res if t is not None][0]
            if not bool(torch.isfinite(res).all()):
                raise RuntimeError("layer %s %s: non-finite result" % (row["layer"], pname))
            del res
            if warmup:
                clock.time(fn, warmup)
            ms = clock.time(fn, reps)[0] / reps
            each = clock.time_each(fn, reps)
            gpu_ms = statistics.median(each) if each else None
            gflop = 2.0 * row["macs"] / 1e9
            out.append({"net": row["net"], "layer": row["layer"], "shape": row["shape"], "pass": pname,
                        "ms": ms, "gflop": gflop, "gflops": gflop / (ms / 1e3) if ms > 0 else 0.0,
                        "gpu_ms": gpu_ms, "gpu_busy_ms": None,
                        "gpu_gflops": gflop / (gpu_ms / 1e3) if gpu_ms else None,
                        "_uses": row["uses"]})
        del passes
    return out


# --------------------------------------------------------------------------------------
# Self-check against the golden fixtures of the reference implementation
# --------------------------------------------------------------------------------------

def read_safetensors(path):
    """{name: tensor} from a safetensors file (F32/F64/U8/I64), standard library + torch only."""
    import struct
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    dtypes = {"F32": torch.float32, "F64": torch.float64, "U8": torch.uint8, "I64": torch.int64}
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        lo, hi = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[lo:hi]), dtype=dtypes[e["dtype"]]) if hi > lo else torch.empty(0, dtype=dtypes[e["dtype"]])
        out[name] = t.reshape(e["shape"])
    return out


def _golden_run(cls, weights, g, task, input_noise=0.0):
    """Two SS-Net iterations from the fixture's weights, inputs and VAT noise (dropout off).
    Returns, per iteration: the loss terms, the memory rows, {momentum key: (sum, params)}."""
    gen = torch.Generator().manual_seed(0)
    model = cls()
    missing, unexpected = model.load_state_dict({k: v.double() for k, v in weights.items()}, strict=False)
    if unexpected or not all(k.endswith("num_batches_tracked") for k in missing):
        raise RuntimeError("state_dict names differ: missing %s, unexpected %s" % (missing[:5], unexpected[:5]))
    for mod in model.modules():
        if isinstance(mod, (nn.Dropout, nn.Dropout3d)):
            mod.p = 0.0
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    memory = PrototypeMemory(task.classes)
    params = dict(model.named_parameters())
    out = []
    for it in range(2):
        k = "it%d." % it
        task.w = float(g[k + "consistency_weight"])
        x = g[k + "x"].double()
        if input_noise:
            x = x * (1.0 + input_noise * torch.randn(x.shape, generator=gen, dtype=x.dtype))
        terms = ssnet_step(model, opt, memory, x, g[k + "labels"].long()[:task.labeled], task,
                           rand_u=g[k + "rand_u"].double())
        mom = {key: float(opt.state[params[key[len(k + "momentum."):]]]["momentum_buffer"].sum())
               for key in g if key.startswith(k + "momentum.")}
        out.append(({t: float(v) for t, v in terms.items()}, list(memory.rows), mom))
    return out


def check_golden(golden_dir, log):
    """Run the golden `iteration3d` / `iteration2d` fixtures (two SS-Net iterations each, dropout
    off, given VAT noise) in float64 on the CPU and compare every loss term, the prototype
    memory and the SGD momentum sums, at the fixtures' tolerances (loss terms 1e-4 relative;
    momentum sums 1e-3 of sum|v| in iteration 0, 5e-3 in iteration 1). The 3D fixture is
    tiny (BatchNorm over 2x2x1 voxels at the bottom, ReLU masks that flip), so its VAT
    gradients move by ~1e-3 when the input moves by 1e-6: there each tolerance is widened to
    3x the change that a 1e-6 relative input perturbation causes (as tests/golden/ssnet.rs
    does). Returns True when everything is within tolerance."""
    ok = True
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for name, cls, init, task in (("iteration3d", VNet, "vnet_init", Task(3, 2, 2, 10.0, 0.0)),
                                      ("iteration2d", UNet, "unet2d_init", Task(2, 4, 2, 6.0, 0.0))):
            g = read_safetensors(os.path.join(golden_dir, "ssnet", name + ".safetensors"))
            weights = read_safetensors(os.path.join(golden_dir, "models", init + ".safetensors"))
            runs = _golden_run(cls, weights, g, task)
            shadow = _golden_run(cls, weights, g, task, input_noise=1e-6) if task.dim == 3 else None
            for it, (terms, rows, mom) in enumerate(runs):
                k = "it%d." % it
                worst_term = worst_mem = worst_mom = 0.0
                tol_term, tol_mom = 1e-4, (1e-3 if it == 0 else 5e-3)
                for t in ("loss", "dice", "ce", "lds", "cl_l", "cl_u"):
                    want = float(g[k + ("loss" if t == "loss" else "loss_" + t)])
                    scale = max(abs(want), 1e-12)
                    worst_term = max(worst_term, abs(terms[t] - want) / scale)
                    if shadow:
                        tol_term = max(tol_term, 3 * abs(shadow[it][0][t] - terms[t]) / scale)
                for c in range(task.classes):
                    if k + "memory_%d" % c in g:
                        want, got = g[k + "memory_%d" % c].double(), rows[c]
                        worst_mem = max(worst_mem, float("inf") if got is None or got.shape != want.shape
                                        else float((got - want).norm() / want.norm()))
                for key, got in mom.items():
                    summ = g[key].double()
                    worst_mom = max(worst_mom, abs(got - float(summ[0])) / float(summ[2]))
                    if shadow:
                        tol_mom = max(tol_mom, 3 * abs(shadow[it][2][key] - got) / float(summ[2]))
                good = worst_term < tol_term and worst_mem < 1e-3 and worst_mom < tol_mom
                ok &= good
                log("golden %s iteration %d: loss terms worst rel %.1e (tol %.0e), memory %.1e (tol 1e-3), "
                    "momentum sums %.1e (tol %.0e): %s" % (name, it, worst_term, tol_term, worst_mem,
                                                          worst_mom, tol_mom, "ok" if good else "MISMATCH"))
    finally:
        torch.set_default_dtype(prev)
    return ok


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------

SIZES = {
    "full": {"s3": [4, 1, 112, 112, 80], "s2": [24, 1, 256, 256], "si": [1, 1, 112, 112, 80],
             "l3": [1, 1, 112, 112, 80], "l3n": 4, "l2": [1, 1, 256, 256], "l2n": 24},
    "tiny": {"s3": [4, 1, 16, 16, 16], "s2": [4, 1, 32, 32], "si": [1, 1, 16, 16, 16],
             "l3": [1, 1, 16, 16, 16], "l3n": 1, "l2": [1, 1, 32, 32], "l2n": 2},
}


def timing(times, gflop, batch):
    """The report entry of a list of (wall ms, GPU ms or None) samples: medians of each."""
    ms = statistics.median(t[0] for t in times)
    gpu = [t[1] for t in times]
    gpu_ms = statistics.median(gpu) if gpu and all(g is not None for g in gpu) else None
    return {"ms": ms, "gflop": gflop, "gflops": gflop / (ms / 1e3) if ms > 0 else 0.0, "batch": list(batch),
            "gpu_ms": gpu_ms, "gpu_busy_ms": None,
            "gpu_gflops": gflop / (gpu_ms / 1e3) if gpu_ms else None}


def describe(times):
    """`GPU median .. ms, min .., mean .. over n` (the wall clock's when there is no GPU time)."""
    gpu = [t[1] for t in times]
    v, what = (gpu, "GPU") if all(g is not None for g in gpu) else ([t[0] for t in times], "wall")
    return "%s median %.2f ms, min %.2f, mean %.2f over %d" % (
        what, statistics.median(v), min(v), statistics.mean(v), len(v))


def bench_iteration(model_cls, kwargs, task, shape, device, clock, args, log):
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    model = model_cls(**kwargs).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    memory = PrototypeMemory(task.classes, 32, args.keep)
    x, y = synthetic_batch(shape, task.labeled, task.classes, device, gen)
    terms = ssnet_step(model, opt, memory, x, y, task)        # validation, not timed
    vals = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in terms.items()}
    bad = [k for k, v in vals.items() if not math.isfinite(v)]
    if bad:
        raise RuntimeError("%s: non-finite loss terms %s: %s" % (model_cls.__name__, bad, vals))
    log("  validation step: " + ", ".join("%s %.5g" % (k, v) for k, v in vals.items())
        + "; memory rows per class " + str([None if m is None else m.shape[0] for m in memory.rows]))
    for _ in range(args.warmup):
        ssnet_step(model, opt, memory, x, y, task)
    clock.sync()
    if clock.cuda:
        torch.cuda.reset_peak_memory_stats()
    times = [clock.time(lambda: ssnet_step(model, opt, memory, x, y, task)) for _ in range(max(args.reps, 1))]
    peak = torch.cuda.max_memory_allocated() if clock.cuda else 0
    log("  %s: %s" % (model_cls.__name__, describe(times)))
    gflop = 9.0 * forward_gflop(model_cls, kwargs, shape, device)
    del model, opt, memory, x, y
    return timing(times, gflop, shape), peak


def bench_inference(shape, device, clock, args, log):
    torch.manual_seed(args.seed)
    model = VNet().to(device).eval()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(args.seed + 1)).to(device)

    def run():
        with torch.no_grad():
            return torch.softmax(model(x)[0], dim=1)

    if not bool(torch.isfinite(run()).all()):
        raise RuntimeError("VNet inference: non-finite output")
    for _ in range(args.warmup):
        run()
    times = [clock.time(run) for _ in range(max(args.reps, 1))]
    log("  inference: %s" % describe(times))
    gflop = forward_gflop(VNet, {}, shape, device)
    return timing(times, gflop, shape)


def bench_admt(official, dim, shape, device, clock, args, log):
    """One official AD-MT step per timed repetition (tools/bench_admt_torch.py) on a synthetic
    batch of `shape` = [U + L, 1, ...], U = L = half (the unlabelled samples first, as the
    official sampler orders them)."""
    import random
    import numpy as np
    import bench_admt_torch as ba
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    classes = ba.CONFIGS[dim]["num_classes"]
    n = shape[0]
    weak, label = synthetic_batch(shape, n, classes, device, gen)
    strong = torch.rand(shape, generator=gen).to(device)
    st = ba.AdmtStep(official, dim, weak, strong, label, n // 2, device)
    vals = st.step()                                          # validation, not timed
    bad = [k for k in ("loss", "loss_lb", "loss_ulb") if not math.isfinite(vals[k])]
    if bad:
        raise RuntimeError("AD-MT %dD: non-finite loss terms %s: %s" % (dim, bad, vals))
    log("  validation step: " + ", ".join("%s %.5g" % (k, v) for k, v in vals.items()))
    for _ in range(args.warmup):
        st.step()
    clock.sync()
    if clock.cuda:
        torch.cuda.reset_peak_memory_stats()
    times = [clock.time(st.step) for _ in range(max(args.reps, 1))]
    peak = torch.cuda.max_memory_allocated() if clock.cuda else 0
    log("  AD-MT %dD: %s (iterations %d..%d)" % (dim, describe(times), st.iter_num - len(times), st.iter_num - 1))
    cls, kwargs = official.net_classes[ba.CONFIGS[dim]["model"]]
    u, l = n - n // 2, n // 2
    sample = list(shape[1:])
    student = [l + 2 * u] + sample
    first = trace_convs(cls, kwargs, [1] + sample, device)[0]
    gflop = (2.0 * forward_gflop(cls, kwargs, [u] + sample, device)
             + 3.0 * forward_gflop(cls, kwargs, student, device)
             - 2.0 * conv_macs(first[1], first[2], first[3]) * student[0] / 1e9)
    del st, weak, strong, label
    return timing(times, gflop, shape), peak


def release(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def set_tf32(mode):
    """Apply --tf32 and return whether convolutions may use TF32."""
    if not torch.cuda.is_available():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode in ("on", "off"):
            torch.backends.cudnn.allow_tf32 = mode == "on"
            torch.backends.cuda.matmul.allow_tf32 = mode == "on"
        return bool(torch.backends.cudnn.allow_tf32)


ROWS = ["iteration3d", "iteration2d", "inference3d", "admt3d", "admt2d", "layers"]
ROW_LABELS = (("iteration3d", "SS-Net 3D iteration (VNet)"), ("iteration2d", "SS-Net 2D iteration (UNet)"),
              ("inference3d", "VNet inference, one patch"), ("admt3d", "AD-MT 3D step (VNet, LA)"),
              ("admt2d", "AD-MT 2D step (UNet, ACDC)"))


def print_table(rep, log):
    log("")
    opt = lambda v, prec: "-" if v is None else "%.*f" % (prec, v)
    log("GFLOP/s from the GPU time (CUDA events) when there is one, else from the wall clock")
    log("%-34s %10s %10s %10s %10s  %s" % ("what", "wall ms", "GPU ms", "GFLOP", "GFLOP/s", "batch"))
    for key, label in ROW_LABELS:
        t = rep[key]
        if t is None:
            continue
        rate = t["gpu_gflops"] if t["gpu_gflops"] is not None else t["gflops"]
        log("%-34s %10.2f %10s %10.1f %10.1f  %s" % (label, t["ms"], opt(t["gpu_ms"], 2), t["gflop"], rate, t["batch"]))
    gib = float(1 << 30)
    peaks = ["%s %.2f GiB" % (name, rep[k] / gib) for k, name in (
        ("peak_memory_3d_bytes", "SS-Net 3D"), ("peak_memory_2d_bytes", "SS-Net 2D"),
        ("peak_memory_admt3d_bytes", "AD-MT 3D"), ("peak_memory_admt2d_bytes", "AD-MT 2D")) if rep[k] is not None]
    if peaks:
        log("peak GPU memory allocated: " + ", ".join(peaks))
    if rep["layers"]:
        log("")
        log("%-5s %-42s %-30s %-10s %9s %9s %9s %9s %4s" % (
            "net", "layer", "shape", "pass", "wall ms", "GPU ms", "GFLOP", "GFLOP/s", "uses"))
        for l in rep["layers"]:
            rate = l["gpu_gflops"] if l["gpu_gflops"] is not None else l["gflops"]
            log("%-5s %-42s %-30s %-10s %9.3f %9s %9.3f %9.1f %4d" % (
                l["net"], l["layer"], l["shape"], l["pass"], l["ms"], opt(l["gpu_ms"], 3), l["gflop"], rate,
                l.get("_uses", 1)))


def opt_int(v):
    return None if v is None else int(v)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", nargs="*", metavar="ROW",
                    help="rows to run (default all): " + " ".join(ROWS))
    ap.add_argument("--admt-code", metavar="DIR", default=os.environ.get("ADMT_CODE"),
                    help="the official AD-MT code/ folder for the admt3d/admt2d rows (default $ADMT_CODE)")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu (smoke test)")
    ap.add_argument("--size", choices=["full", "tiny"], default="full")
    ap.add_argument("--tf32", choices=["on", "off"], default=None,
                    help="TF32 for convolutions and matmuls (default: PyTorch's defaults, recorded)")
    ap.add_argument("--reps", type=int, default=5, help="timed iterations (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed iterations after the validation one")
    ap.add_argument("--layer-reps", type=int, default=20, help="back-to-back calls per layer pass (mean)")
    ap.add_argument("--no-layers", action="store_true", help="skip the per-layer table (default rows)")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    ap.add_argument("--keep", choices=["lowest", "highest"], default="lowest",
                    help="which selector scores the memory keeps (the reference keeps the lowest)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--json", metavar="FILE", help="also write the JSON report here")
    ap.add_argument("--check-golden", metavar="DIR", nargs="?", const="/work/shared/golden",
                    help="instead of benchmarking, check this SS-Net against the golden fixtures of the "
                         "reference (iteration3d/2d, float64 on the CPU); exit 1 on a mismatch")
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, flush=True)

    if args.check_golden:
        return 0 if check_golden(args.check_golden, log) else 1

    rows = args.rows or list(ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit("bench_torch.py: unknown row(s) %s; the rows are %s" % (", ".join(unknown), " ".join(ROWS)))
    if args.no_layers and "layers" in rows:
        rows.remove("layers")
    official = None
    if "admt3d" in rows or "admt2d" in rows:
        import bench_admt_torch as ba
        try:
            official = ba.Official(args.admt_code)
        except ba.OfficialCodeError as e:
            sys.exit("bench_torch.py: %s" % e)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_torch.py: no CUDA device is visible to PyTorch %s; use --device cpu for a smoke test"
                 % torch.__version__)
    if device.type == "cuda":
        if device.index is not None:
            torch.cuda.set_device(device)
        adapter = torch.cuda.get_device_name(device)
    else:
        adapter = "cpu (%s)" % (platform.processor() or platform.machine())
    tf32 = set_tf32(args.tf32) if device.type == "cuda" else False
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    log("pytorch %s on %s; size %s; tf32 (convs) %s; cudnn.benchmark %s; reps %d, warm-up %d" % (
        torch.__version__, adapter, args.size, tf32, args.cudnn_benchmark, args.reps, args.warmup))

    sz = SIZES[args.size]
    clock = Clock(device)
    n3, n2 = sz["s3"][0], sz["s2"][0]
    task3 = Task(3, 2, n3 // 2, eps=10.0, w=consistency_weight(1.0, 40.0, 40))
    task2 = Task(2, 4, n2 // 2, eps=6.0, w=consistency_weight(0.1, 200.0, 200))

    it3 = it2 = inf = adm3 = adm2 = peak3 = peak2 = peak_adm3 = peak_adm2 = None
    if "iteration3d" in rows:
        log("3D iteration (VNet) %s" % sz["s3"])
        it3, peak3 = bench_iteration(VNet, {}, task3, sz["s3"], device, clock, args, log)
        release(device)
    if "iteration2d" in rows:
        log("2D iteration (UNet) %s" % sz["s2"])
        it2, peak2 = bench_iteration(UNet, {}, task2, sz["s2"], device, clock, args, log)
        release(device)
    if "inference3d" in rows:
        log("VNet inference %s" % sz["si"])
        inf = bench_inference(sz["si"], device, clock, args, log)
        release(device)
    if "admt3d" in rows:
        log("AD-MT 3D step (official code %s, VNet, LA settings) %s" % (official.dir, sz["s3"]))
        adm3, peak_adm3 = bench_admt(official, 3, sz["s3"], device, clock, args, log)
        release(device)
    if "admt2d" in rows:
        log("AD-MT 2D step (official code %s, UNet, ACDC settings) %s" % (official.dir, sz["s2"]))
        adm2, peak_adm2 = bench_admt(official, 2, sz["s2"], device, clock, args, log)
        release(device)

    layers = []
    if "layers" in rows:
        gen = torch.Generator().manual_seed(args.seed + 2)
        rows = distinct_layers("vnet", VNet, {}, [sz["l3n"]] + sz["l3"][1:], device)
        rows += distinct_layers("unet", UNet, {}, [sz["l2n"]] + sz["l2"][1:], device)
        log("per-layer table: %d distinct shapes x 3 passes" % len(rows))
        layers = bench_layers(rows, device, clock, max(args.warmup, 1), max(args.layer_reps, 1), gen)
        release(device)

    rep = {"engine": "pytorch", "adapter": adapter, "size": args.size, "tf32": tf32,
           "gpu_timer": "torch.cuda.Event" if device.type == "cuda" else None,
           "tuned": bool(args.cudnn_benchmark),
           "tensor_cores": "tf32" if tf32 else "off",
           "iteration3d": it3, "iteration2d": it2, "inference3d": inf, "admt3d": adm3, "admt2d": adm2,
           "peak_memory_3d_bytes": opt_int(peak3), "peak_memory_2d_bytes": opt_int(peak2),
           "peak_memory_admt3d_bytes": opt_int(peak_adm3), "peak_memory_admt2d_bytes": opt_int(peak_adm2),
           "layers": layers}
    print_table(rep, log)
    for l in rep["layers"]:
        l.pop("_uses", None)
    text = json.dumps(rep)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
