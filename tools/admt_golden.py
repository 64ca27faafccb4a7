#!/usr/bin/env python3
"""Golden fixtures of AD-MT (Zhao et al., ECCV 2024) from its OFFICIAL code.

The official modules are imported from a checkout of github.com/ZhenZHAO/AD-MT (never copied
into this repository): the networks (code/networks/vnet.py, unet.py), the losses
(code/utils/losses.py), the ramps (code/utils/ramps.py), CutMix (code/dataloaders/mixaugs.py),
the alternation and the student/teacher compromise (code/train_utils.py), and the consistency
weight and EMA update of the two training scripts (code/train_post_3d_aut.py,
code/train_post_2d_aut.py). What the scripts compute inline in their training loop (the
teachers' entropy-weighted fusion, T3:221-240; the order of the step, T3:199-365) is written
out below in that order, every call going to the official functions.

Every fixture is computed twice from the same float32 inputs, starting weights and random
draws: in float64 (stored under `<key>`, rounded to float32) and in float32 (stored as
`f32.<key>` where it differs): the reference's own float32 error, the yardstick of
`../shared/golden/README.md`. Dropout is off (it is random): the VNet's `has_dropout` is
cleared, the UNet's dropout layers replaced by identities.

Starting weights are not stored (three 9.4 M parameter VNets would not be small): every
parameter and BatchNorm buffer is drawn by `splitmix-uniform-v1`, a rule our Rust tests
reproduce bit for bit (`ssnet::golden::hashed_init`):

    h_i  = splitmix64(splitmix64(seed XOR fnv1a64(key)) + i)      (wrapping, u64)
    u_i  = (h_i >> 40) / 2^24                                      (24 bits, exact)
    v_i  = float32(a + b * (2 u_i - 1))                            (float64 arithmetic)

with (a, b) = (0, 1/sqrt(fan_in)) for weights of 2+ axes (fan_in = shape[1] * prod(shape[2:]),
PyTorch's bound), (1, 0.25) for 1-axis `.weight` (BatchNorm scale), (2.5, 0.5) for a BatchNorm
shift (a `.bias` beside a `.running_mean`), (0, 0.1) for other `.bias` and `running_mean`,
(1, 0.25) for `running_var`; `num_batches_tracked` starts at 0.

Discrete decisions at a tie. A (leaky) ReLU whose input is within float32 rounding of 0, or a
max-pooling window whose two largest values are, is decided by rounding: a faithful float32
engine may decide it the other way than the float64 run and than PyTorch's float32 run, and
one such flip moves the gradients of every layer before it by up to percents. That is a coin
toss, not a measure of arithmetic. So the BatchNorm shifts above keep most pre-activations
away from 0, and the inputs of a network fixture are redrawn (up to 40 times) until no
activation or pooling decision of the float64 run lies within 1e-6 (relative to the layer's
spread) of a tie; the smallest margin is recorded as `tie_margin` in the config. Each fixture
stores the summary of every starting tensor (`init.<model>.<key>`) so a test first proves it
rebuilt the same weights.

Usage (the official code extracted from a clone or a bare mirror):

    git --git-dir=/path/to/AD-MT.git archive HEAD code | tar -x -C /tmp/admt
    python3 tools/admt_golden.py --code /tmp/admt --out tests/fixtures [--seed 2023] [--alt]

`--alt` switches to other shapes and batch splits (3D 16x32x32 with 1 labelled + 3
unlabelled, 2D 48x32 with 3 + 1 ...), `--seed` changes every input, weight and draw. Needs
torch and numpy; the official scripts' training-only imports (tensorboard, torchvision,
medpy, ...) are replaced by stand-ins when missing, since nothing here calls them.
"""

import argparse
import importlib
import json
import math
import os
import random
import struct
import sys
import types

import numpy as np

# ---------------------------------------------------------------------------------------
# the official code
# ---------------------------------------------------------------------------------------


def _stand_in(name):
    """A module whose every attribute is a placeholder that refuses to be called."""
    mod = types.ModuleType(name)
    mod.__path__ = []  # importable as a package

    def getattr_(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)

        class Placeholder:
            def __init__(self, *a, **k):
                raise RuntimeError(f"{name}.{attr} is a stand-in: the generator must not reach it")

        return Placeholder

    mod.__getattr__ = getattr_
    return mod


def import_official(code_root):
    code = os.path.join(code_root, "code")
    if not os.path.isfile(os.path.join(code, "train_utils.py")):
        sys.exit(f"--code {code_root}: no code/train_utils.py there (extract the official AD-MT repository's code/ folder)")
    sys.path.insert(0, code)
    # Only for modules that are not installed; nothing on the computed path uses them.
    optional = [
        "torch.utils.tensorboard", "torchvision", "torchvision.transforms", "tqdm", "pandas",
        "medpy", "medpy.metric", "nibabel", "skimage", "skimage.measure", "skimage.segmentation",
        "PIL", "PIL.Image", "PIL.ImageOps", "PIL.ImageFilter", "h5py", "yaml",
    ]
    stood_in = []
    for name in optional:
        try:
            importlib.import_module(name)
        except Exception:
            sys.modules[name] = _stand_in(name)
            parent, _, child = name.rpartition(".")
            if parent and parent in sys.modules:
                setattr(sys.modules[parent], child, sys.modules[name])
            stood_in.append(name)
    # The dataset modules build the data pipeline (PIL, h5py, torchvision); not used here.
    for name in ["dataloaders.dataset_3d", "dataloaders.dataset_2d", "val_3D", "val_2D"]:
        sys.modules[name] = _stand_in(name)
    off = types.SimpleNamespace(
        vnet=importlib.import_module("networks.vnet"),
        unet=importlib.import_module("networks.unet"),
        losses=importlib.import_module("utils.losses"),
        ramps=importlib.import_module("utils.ramps"),
        mixaugs=importlib.import_module("dataloaders.mixaugs"),
        train_utils=importlib.import_module("train_utils"),
        t3=importlib.import_module("train_post_3d_aut"),
        t2=importlib.import_module("train_post_2d_aut"),
        stood_in=stood_in,
    )
    return off


# ---------------------------------------------------------------------------------------
# starting weights: splitmix-uniform-v1
# ---------------------------------------------------------------------------------------

M64 = (1 << 64) - 1


def _splitmix64(x):
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h ^= b
        h = (h * 0x100000001B3) & M64
    return h


def hashed_values(key, shape, seed, norm_shift=False):
    n = int(np.prod(shape)) if len(shape) else 1
    if key.endswith("num_batches_tracked"):
        return None
    if norm_shift:
        a, b = 2.5, 0.5
    elif key.endswith("running_mean") or key.endswith(".bias"):
        a, b = 0.0, 0.1
    elif key.endswith("running_var"):
        a, b = 1.0, 0.25
    elif len(shape) >= 2:
        fan_in = int(shape[1]) * int(np.prod(shape[2:]))
        a, b = 0.0, 1.0 / math.sqrt(fan_in)
    elif key.endswith(".weight"):
        a, b = 1.0, 0.25
    else:
        raise ValueError(f"no starting-weight rule for {key} {shape}")
    base = _splitmix64(np.array([(seed ^ _fnv1a64(key)) & M64], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        h = _splitmix64(base + np.arange(n, dtype=np.uint64))
    u = (h >> np.uint64(40)).astype(np.float64) / 16777216.0
    return (a + b * (2.0 * u - 1.0)).astype(np.float32).reshape(shape)


def hashed_state(net, seed):
    """Every parameter and buffer of `net` by the rule (float32 numpy); a `.bias` beside a
    `.running_mean` is a BatchNorm shift."""
    sd = net.state_dict()

    def shift(k):
        return k.endswith(".bias") and k[: -len("bias")] + "running_mean" in sd

    return {k: hashed_values(k, tuple(v.shape), seed, shift(k)) for k, v in sd.items()}


# ---------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------


def summary(v):
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    n = v.size
    m = min(n, 64)
    idx = [(k * n) // m for k in range(m)]
    return np.array([v.sum(), math.sqrt((v * v).sum()), np.abs(v).sum()] + [v[i] for i in idx])


class Fixture:
    def __init__(self, name, note, config):
        self.name = name
        self.tensors = {}
        self.config = dict(config)
        self.config["note"] = note

    def put(self, key, value):
        """An input or exact value (integer maps), stored once."""
        a = np.asarray(value)
        if a.dtype == np.bool_ or (a.dtype.kind in "iu"):
            if a.min(initial=0) < 0 or a.max(initial=0) > 255:
                raise ValueError(f"{key}: integer map out of u8")
            a = a.astype(np.uint8)
        else:
            a = a.astype(np.float32)
        self.tensors[key] = a

    def result(self, key, v64, v32, as_summary=False):
        """A computed tensor: the float64 result (rounded to float32) and, where they
        differ, the float32 run's as f32.<key>."""
        a64 = np.asarray(v64, dtype=np.float64)
        a32 = np.asarray(v32, dtype=np.float64)
        if a64.shape != a32.shape:
            raise ValueError(f"{key}: float64 {a64.shape} vs float32 {a32.shape}")
        if as_summary:
            a64, a32 = summary(a64), summary(a32)
        if a64.dtype.kind != "f":
            a64 = a64.astype(np.float64)
        s64 = a64.astype(np.float32)
        s32 = a32.astype(np.float32)
        self.tensors[key] = s64
        if not np.array_equal(s64, s32):
            self.tensors["f32." + key] = s32

    def label_result(self, key, m64, m32):
        """An integer map from both runs (U8); f32.<key> where the float32 run differs."""
        self.put(key, m64)
        if not np.array_equal(np.asarray(m64), np.asarray(m32)):
            self.put("f32." + key, m32)

    def write(self, folder):
        os.makedirs(folder, exist_ok=True)
        header = {"__metadata__": {"config": json.dumps(self.config, sort_keys=True)}}
        blobs, off = [], 0
        for k in sorted(self.tensors):
            a = np.ascontiguousarray(self.tensors[k])
            dt = {np.dtype(np.float32): "F32", np.dtype(np.uint8): "U8"}[a.dtype]
            b = a.astype(a.dtype.newbyteorder("<")).tobytes()
            header[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
            blobs.append(b)
            off += len(b)
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        path = os.path.join(folder, self.name + ".safetensors")
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(h)))
            f.write(h)
            for b in blobs:
                f.write(b)
        os.replace(tmp, path)
        print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(self.tensors)} tensors)")


# ---------------------------------------------------------------------------------------
# helpers over the official networks
# ---------------------------------------------------------------------------------------


def make_net(off, arch, torch):
    if arch == "vnet":
        # As net_factory("vnet") builds it (VNet(1, 2, batchnorm, has_dropout=True)), on the
        # CPU and with dropout off.
        net = off.vnet.VNet(n_channels=1, n_classes=2, normalization="batchnorm", has_dropout=True)
        net.has_dropout = False
    else:
        net = off.unet.UNet(in_chns=1, class_num=4)
        for mod in net.modules():
            for name, child in list(mod.named_children()):
                if isinstance(child, torch.nn.Dropout):
                    setattr(mod, name, torch.nn.Identity())
    return net


def load(net, state, dtype, torch):
    sd = {}
    for k, v in net.state_dict().items():
        if state[k] is None:
            sd[k] = torch.zeros_like(v)
        else:
            sd[k] = torch.from_numpy(state[k].copy())
    net.load_state_dict(sd)
    return net.to(dtype)


TIE_MARGIN = 1e-6


class Margins:
    """The smallest distance to a tie of every (leaky) ReLU and max-pooling decision of the
    networks it watches, relative to the spread of the layer's input."""

    def __init__(self, torch):
        self.torch = torch
        self.min = float("inf")
        self.handles = []

    def watch(self, *nets):
        torch = self.torch
        for net in nets:
            for m in net.modules():
                if isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU)):
                    # Before the call: the networks' ReLUs work in place.
                    self.handles.append(m.register_forward_pre_hook(self._act))
                elif isinstance(m, torch.nn.MaxPool2d):
                    self.handles.append(m.register_forward_hook(self._pool))
        return self

    def _act(self, m, inp):
        z = inp[0].detach()
        self.min = min(self.min, float(z.abs().min() / (z.std() + 1e-30)))

    def _pool(self, m, inp, out):
        v = inp[0].detach()
        n, c, h, w = v.shape
        win = v[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2)
        win = win.permute(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
        top = self.torch.topk(win, 2, dim=-1).values
        self.min = min(self.min, float((top[..., 0] - top[..., 1]).min() / (v.std() + 1e-30)))

    def close(self):
        for h in self.handles:
            h.remove()


def away_from_ties(make, what):
    """`make(attempt, complete)` draws the inputs of `attempt` and returns (fixture, margin);
    when the float64 run comes within TIE_MARGIN of a tie and `complete` is false, it stops
    there (fixture None). Returns the first draw clear of ties, else the widest, completed."""
    margins = []
    for attempt in range(40):
        fx, margin = make(attempt, False)
        margins.append(margin)
        if fx is not None:
            break
    else:
        attempt = int(np.argmax(margins))
        fx, margin = make(attempt, True)
        print(f"warning: {what}: no input draw kept every decision {TIE_MARGIN} from a tie (best {margin:.2e})")
    fx.config["tie_margin"] = margin
    fx.config["input_attempt"] = attempt
    return fx


def np_of(t):
    """A copy (a float64 tensor's .double() is itself, and .numpy() shares its memory: later
    in-place updates would show through)."""
    return np.array(t.detach().cpu().double().numpy(), copy=True)


def init_summaries(fx, model_name, state):
    for k, v in state.items():
        if v is not None:
            fx.put(f"init.{model_name}.{k}", summary(v))


def param_keys(net):
    return [k for k, _ in net.named_parameters()]


def buffer_keys(net):
    return [k for k, _ in net.named_buffers() if not k.endswith("num_batches_tracked")]


# ---------------------------------------------------------------------------------------
# the fixtures
# ---------------------------------------------------------------------------------------


def shapes(alt, dim):
    """(L, U, spatial) of the model and iteration fixtures."""
    if dim == 3:
        return (1, 3, (16, 32, 32)) if alt else (2, 2, (32, 32, 16))
    return (3, 1, (48, 32)) if alt else (2, 2, (32, 32))


def sup_loss(off, torch, logits, labels, n_classes):
    """Step 6 (T3:290-294): (CE + DiceLoss(softmax, nothing ignored)) / 2."""
    ce = torch.nn.CrossEntropyLoss()(logits, labels.long())
    dice = off.losses.DiceLoss(n_classes)(
        torch.softmax(logits, dim=1), labels.unsqueeze(1).to(logits.dtype),
        ignore=torch.zeros_like(labels).to(logits.dtype))
    return ce, dice, (ce + dice) / 2.0


def fixture_model(off, torch, args, arch):
    return away_from_ties(lambda a, c: fixture_model_at(off, torch, args, arch, a, c), arch)


def fixture_model_at(off, torch, args, arch, attempt, complete):
    dim = 3 if arch == "vnet" else 2
    nc = 2 if arch == "vnet" else 4
    l, u, sp = shapes(args.alt, dim)
    n = 2
    rng = np.random.RandomState(args.seed + (11 if dim == 3 else 12) + 1000 * attempt)
    x = rng.standard_normal((n, 1) + sp).astype(np.float32)
    y = rng.randint(0, nc, size=(n,) + sp).astype(np.int64)
    seed = args.seed * 1000 + 1
    stem = "vnet" if dim == 3 else "unet2d"
    fx = Fixture(stem, (
        f"AD-MT's heads-free {arch} (official code/networks, dropout off) from the splitmix-uniform-v1 "
        "weights of seed `net`: train-mode logits of `x`, the supervised loss of step 6 "
        "((CE + DiceLoss(softmax, nothing ignored)) / 2 against `y`) with its parts, the "
        "summaries of every parameter gradient (`grad.<key>`, official state_dict names), the "
        "BatchNorm running statistics after that pass (`after.<key>`, full), then eval-mode logits"),
        {"arch": arch, "num_classes": nc, "net": seed, "init": "splitmix-uniform-v1",
         "input_shape": list(x.shape)})
    fx.put("x", x)
    fx.put("y", y)
    out = {}
    for dtype in (torch.float64, torch.float32):
        net = make_net(off, arch, torch)
        state = hashed_state(net, seed)
        if dtype == torch.float64:
            init_summaries(fx, "net", state)
        load(net, state, dtype, torch)
        margins = Margins(torch).watch(net) if dtype == torch.float64 else None
        net.train()
        xt = torch.from_numpy(x).to(dtype)
        yt = torch.from_numpy(y)
        logits = net(xt)
        ce, dice, loss = sup_loss(off, torch, logits, yt, nc)
        net.zero_grad()
        loss.backward()
        r = {"logits": np_of(logits), "loss": np_of(loss), "loss_ce": np_of(ce),
             "loss_dice": np_of(dice)}
        for k, p in net.named_parameters():
            r["grad." + k] = np_of(p.grad)
        for k in buffer_keys(net):
            r["after." + k] = np_of(net.state_dict()[k])
        net.eval()
        with torch.no_grad():
            r["eval_logits"] = np_of(net(xt))
        out[dtype] = r
        if margins is not None:
            margins.close()
            margin = margins.min
            if margin < TIE_MARGIN and not complete:
                return None, margin
    r64, r32 = out[torch.float64], out[torch.float32]
    for k in r64:
        fx.result(k, r64[k], r32[k], as_summary=k.startswith("grad."))
    return fx, margin


def fuse(torch, p1, p2, temperature):
    """T3:221-240 (and T2, same lines): the teachers' labels, conflict, entropy weights, the
    tempered renormalisation, then max / argmax."""
    _, l1 = torch.max(p1, dim=1)
    _, l2 = torch.max(p2, dim=1)
    conflict = l1 != l2
    e1 = -torch.sum(p1 * torch.log2(p1 + 1e-10), dim=1)
    e2 = -torch.sum(p2 * torch.log2(p2 + 1e-10), dim=1)
    w1 = torch.exp(-e1) / (torch.exp(-e1) + torch.exp(-e2))
    w2 = 1.0 - w1
    q = w1.unsqueeze(1) * p1 + w2.unsqueeze(1) * p2
    q = torch.pow(q, 1.0 / temperature)
    q = q / torch.sum(q, dim=1, keepdim=True)
    conf, label = torch.max(q, dim=1)
    return q, conf, label, conflict


def fixture_fusion(off, torch, args):
    fx = Fixture("fusion", (
        "Teacher fusion and the student compromise (T3:221-240 fusion as released, temperature 1; "
        "official train_utils.get_compromise_pseudo_btw_tea_stu, mode pixel_confidence, with the "
        "teachers' conflict map; then the threshold). Per prefix c<C>: inputs p1, p2 (teacher "
        "softmaxes) and z_w (student logits on the weak view); outputs fused (q), conf (max q), "
        "label (argmax q), conflict (teacher labels differ), student_conf / student_label (max / "
        "argmax softmax z_w), target_conf (compromise confidence) and target (compromise label, "
        "255 where target_conf < threshold)"), {"init": None})
    rng = np.random.RandomState(args.seed + 21)
    cases = [(4, (2, 13, 17) if not args.alt else (3, 9, 22)), (2, (2, 9, 10, 11) if not args.alt else (1, 7, 12, 5))]
    for c, sp in cases:
        n = sp[0]
        pre = f"c{c}."
        # Logits scaled so the confidences spread over (1/C, 1).
        z1 = (3.0 * rng.standard_normal((n, c) + sp[1:])).astype(np.float32)
        z2 = (3.0 * rng.standard_normal((n, c) + sp[1:])).astype(np.float32)
        zw = (3.0 * rng.standard_normal((n, c) + sp[1:])).astype(np.float32)
        p1 = torch.softmax(torch.from_numpy(z1), dim=1).numpy()
        p2 = torch.softmax(torch.from_numpy(z2), dim=1).numpy()
        theta = float(np.round(0.5 * (1.0 + 1.0 / c) + 0.1, 2))
        fx.config[pre + "threshold"] = theta
        fx.config[pre + "temperature"] = 1.0
        fx.put(pre + "p1", p1)
        fx.put(pre + "p2", p2)
        fx.put(pre + "z_w", zw)
        out = {}
        for dtype in (torch.float64, torch.float32):
            t1 = torch.from_numpy(p1).to(dtype)
            t2 = torch.from_numpy(p2).to(dtype)
            q, conf, label, conflict = fuse(torch, t1, t2, 1.0)
            s_conf, s_label = torch.max(torch.softmax(torch.from_numpy(zw).to(dtype), dim=1), dim=1)
            tgt, tconf, _ = off.train_utils.get_compromise_pseudo_btw_tea_stu(
                label, conf, s_label, s_conf, "pixel_confidence", conflict)
            tgt = tgt.clone()
            tgt[~tconf.ge(theta)] = 255
            out[dtype] = {"fused": np_of(q), "conf": np_of(conf), "student_conf": np_of(s_conf),
                          "target_conf": np_of(tconf),
                          "label": label.numpy(), "conflict": conflict.numpy(),
                          "student_label": s_label.numpy(), "target": tgt.numpy()}
        r64, r32 = out[torch.float64], out[torch.float32]
        for k in ("fused", "conf", "student_conf", "target_conf"):
            fx.result(pre + k, r64[k], r32[k])
        for k in ("label", "conflict", "student_label", "target"):
            fx.label_result(pre + k, r64[k], r32[k])
    return fx


class Recorder:
    """Records CutMix's draws (permutation, Beta, centres, boxes) while the official
    cut_mix / cut_mix_3d run unchanged on the global numpy and torch generators."""

    def __init__(self, off, torch):
        self.off, self.torch = off, torch

    def __enter__(self):
        self.draws = {"perm": None, "lambda": None, "centres": [], "boxes": None}
        torch, mx = self.torch, self.off.mixaugs
        self.saved = (torch.randperm, np.random.beta, np.random.randint, mx.rand_bbox, mx.rand_bbox_3d)
        randperm, beta, randint, rb, rb3 = self.saved
        d = self.draws

        def rec_perm(*a, **k):
            d["perm"] = randperm(*a, **k)
            return d["perm"]

        def rec_beta(*a, **k):
            d["lambda"] = float(beta(*a, **k))
            return d["lambda"]

        def rec_randint(*a, **k):
            v = randint(*a, **k)
            d["centres"].append(np.asarray(v).tolist())
            return v

        def rec_box(f):
            def g(*a, **k):
                v = f(*a, **k)
                d["boxes"] = [np.asarray(b).tolist() for b in v]
                return v
            return g

        torch.randperm = rec_perm
        np.random.beta = rec_beta
        np.random.randint = rec_randint
        mx.rand_bbox = rec_box(rb)
        mx.rand_bbox_3d = rec_box(rb3)
        return self.draws

    def __exit__(self, *exc):
        torch, mx = self.torch, self.off.mixaugs
        (torch.randperm, np.random.beta, np.random.randint, mx.rand_bbox, mx.rand_bbox_3d) = self.saved


def put_draws(fx, pre, d, dims):
    n = len(d["perm"])
    fx.put(pre + "perm", np.asarray(d["perm"].tolist(), dtype=np.uint8))
    fx.config[pre + "lambda"] = d["lambda"]
    # centres[axis][sample]; boxes as [lo_axis0, lo_axis1, (lo_axis2,) hi_axis0, ...]
    fx.put(pre + "centres", np.asarray(d["centres"], dtype=np.uint8).reshape(len(dims), n))
    fx.put(pre + "boxes", np.asarray(d["boxes"], dtype=np.uint8).reshape(2 * len(dims), n))


def draws_equal(a, b):
    return (a["perm"].tolist() == b["perm"].tolist() and a["lambda"] == b["lambda"]
            and a["centres"] == b["centres"] and a["boxes"] == b["boxes"])


def fixture_cutmix(off, torch, args):
    fx = Fixture("cutmix", (
        "Official mixaugs.cut_mix (2D) and cut_mix_3d (3D) with the teachers' conflict map, on "
        "the global numpy/torch generators seeded with `seed`. Per prefix d2. / d3.: inputs image "
        "[U,1,...], label (u8), conf (f32), conflict (u8); the draws: perm (torch.randperm), "
        "config lambda (Beta(4,4)), centres [axis, sample] (np.random.randint from floor(D/8)), "
        "boxes [lo per axis, then hi per axis; sample]; outputs mixed_image, mixed_label, "
        "mixed_conf, mixed_conflict"), {"seed": args.seed})
    rng = np.random.RandomState(args.seed + 31)
    cases = [("d2.", (4, 1, 24, 20) if not args.alt else (3, 1, 17, 33)),
             ("d3.", (3, 1, 16, 12, 10) if not args.alt else (4, 1, 9, 14, 20))]
    for pre, shape in cases:
        img = rng.standard_normal(shape).astype(np.float32)
        lab = rng.randint(0, 4, size=(shape[0],) + shape[2:]).astype(np.int64)
        conf = rng.random_sample((shape[0],) + shape[2:]).astype(np.float32)
        confl = rng.random_sample((shape[0],) + shape[2:]) < 0.3
        fx.put(pre + "image", img)
        fx.put(pre + "label", lab)
        fx.put(pre + "conf", conf)
        fx.put(pre + "conflict", confl)
        res = {}
        for dtype in (torch.float64, torch.float32):
            np.random.seed(args.seed)
            torch.manual_seed(args.seed)
            fn = off.mixaugs.cut_mix if pre == "d2." else off.mixaugs.cut_mix_3d
            with Recorder(off, torch) as d:
                mi, ml, mc, mf = fn(torch.from_numpy(img).to(dtype), torch.from_numpy(lab),
                                    torch.from_numpy(conf).to(dtype), torch.from_numpy(confl))
            res[dtype] = (d, np_of(mi), ml.numpy(), np_of(mc), mf.numpy())
        d64, d32 = res[torch.float64][0], res[torch.float32][0]
        assert draws_equal(d64, d32), "the two runs drew differently"
        put_draws(fx, pre, d64, shape[2:])
        fx.result(pre + "mixed_image", res[torch.float64][1], res[torch.float32][1])
        fx.label_result(pre + "mixed_label", res[torch.float64][2], res[torch.float32][2])
        fx.result(pre + "mixed_conf", res[torch.float64][3], res[torch.float32][3])
        fx.label_result(pre + "mixed_conflict", res[torch.float64][4], res[torch.float32][4])
    return fx


def fixture_losses(off, torch, args):
    fx = Fixture("losses", (
        "AD-MT's losses with their logit gradients (`g.<case>`): masked_ce = LA's unsupervised "
        "F.cross_entropy(z, target, ignore_index=-100) (T3:333-335; `target` 255 = ignored); "
        "masked_dice = ACDC's official DiceLoss(C)(softmax z, target, ignore=mask) (T2:344-347; "
        "`mask` 1 = ignored); sup2d / sup3d = step 6's (CE + DiceLoss(nothing ignored)) / 2"),
        {"seed": args.seed})
    rng = np.random.RandomState(args.seed + 41)
    s3 = (2, 2, 9, 10, 11) if not args.alt else (3, 2, 5, 12, 7)
    s2 = (2, 4, 13, 17) if not args.alt else (3, 4, 19, 11)
    cases = {
        "masked_ce": s3, "masked_dice": s2, "sup3d": s3, "sup2d": s2,
    }
    for case, shape in cases.items():
        c = shape[1]
        z = (2.0 * rng.standard_normal(shape)).astype(np.float32)
        t = rng.randint(0, c, size=(shape[0],) + shape[2:]).astype(np.int64)
        mask = rng.random_sample(t.shape) < 0.4
        fx.put(case + ".z", z)
        if case == "masked_ce":
            t_ign = t.copy()
            t_ign[mask] = 255
            fx.put(case + ".target", t_ign)
        else:
            fx.put(case + ".target", t)
        if case == "masked_dice":
            fx.put(case + ".mask", mask)
        res = {}
        for dtype in (torch.float64, torch.float32):
            zt = torch.from_numpy(z).to(dtype).requires_grad_(True)
            tt = torch.from_numpy(t)
            if case == "masked_ce":
                tm = tt.clone()
                tm[torch.from_numpy(mask)] = -100
                loss = torch.nn.functional.cross_entropy(zt, tm.long(), ignore_index=-100, reduction="mean")
            elif case == "masked_dice":
                loss = off.losses.DiceLoss(c)(torch.softmax(zt, dim=1), tt.unsqueeze(1).to(dtype),
                                              ignore=torch.from_numpy(mask).to(dtype))
            else:
                _, _, loss = sup_loss(off, torch, zt, tt, c)
            loss.backward()
            res[dtype] = (np_of(loss), np_of(zt.grad))
        fx.result(case + ".loss", res[torch.float64][0], res[torch.float32][0])
        fx.result("g." + case, res[torch.float64][1], res[torch.float32][1])
    return fx


def fixture_ema(off, torch, args):
    g, rampup, cap = (43, 40, 0.99) if not args.alt else (57, 50, 0.99)
    fx = Fixture("ema", (
        "One official update_ema_variables (train_post_3d_aut.py:40-53) of a VNet teacher "
        "(`teacher` seed) from a student (`student` seed), both splitmix-uniform-v1, at "
        "global_step `global_step` with consistency_rampup `rampup` and cap `ema_decay` "
        "(alpha = min(1 - 1/(g - R + 1), cap)): summaries of every teacher parameter and "
        "running statistic after (`after.<key>`)"),
        {"arch": "vnet", "num_classes": 2, "init": "splitmix-uniform-v1",
         "student": args.seed * 1000 + 2, "teacher": args.seed * 1000 + 3,
         "global_step": g, "rampup": rampup, "ema_decay": cap,
         "alpha": min(1 - 1 / (g - rampup + 1), cap)})
    res = {}
    for dtype in (torch.float64, torch.float32):
        s = make_net(off, "vnet", torch)
        t = make_net(off, "vnet", torch)
        ss, ts = hashed_state(s, fx.config["student"]), hashed_state(t, fx.config["teacher"])
        if dtype == torch.float64:
            init_summaries(fx, "student", ss)
            init_summaries(fx, "teacher", ts)
        load(s, ss, dtype, torch)
        load(t, ts, dtype, torch)
        off.t3.update_ema_variables(s, t, cap, g, {"consistency_rampup": rampup})
        sd = t.state_dict()
        res[dtype] = {k: np_of(sd[k]) for k in param_keys(t) + buffer_keys(t)}
    for k in res[torch.float64]:
        fx.result("after." + k, res[torch.float64][k], res[torch.float32][k], as_summary=True)
    return fx


def fixture_iteration(off, torch, args, dim):
    return away_from_ties(lambda a, c: fixture_iteration_at(off, torch, args, dim, a, c), f"iteration{dim}d")


def fixture_iteration_at(off, torch, args, dim, attempt, complete):
    arch = "vnet" if dim == 3 else "unet"
    nc = 2 if dim == 3 else 4
    script = off.t3 if dim == 3 else off.t2
    mixer = off.mixaugs.cut_mix_3d if dim == 3 else off.mixaugs.cut_mix
    l, u, sp = shapes(args.alt, dim)
    rng = np.random.RandomState(args.seed + (51 if dim == 3 else 52) + 1000 * attempt)
    k0, max_it, base_lr = 2, 10, 0.01
    cfg = {
        "arch": arch, "num_classes": nc, "labeled_bs": l, "unlabeled_bs": u,
        "init": "splitmix-uniform-v1",
        "student": args.seed * 1000 + 11, "teacher1": args.seed * 1000 + 12,
        "teacher2": args.seed * 1000 + 13,
        "base_lr": base_lr, "momentum": 0.9, "weight_decay": 1e-4, "max_iterations": max_it,
        "start_iteration": k0, "consistency": 2.0, "consistency_rampup": 0, "ema_decay": 0.99,
        "alternate_period": 1, "cutmix_prob": 1.0, "temperature": 1.0,
        "unsup_loss": "ce" if dim == 3 else "dice", "seed": args.seed,
    }
    # The LR of step k0 as the run would have set it after step k0 - 1 (T3:362-365).
    cfg["lr"] = base_lr * (1.0 - (k0 - 1) / max_it) ** 0.9
    inputs = []
    for it in range(2):
        inputs.append({
            "labeled": rng.standard_normal((l, 1) + sp).astype(np.float32),
            "labels": rng.randint(0, nc, size=(l,) + sp).astype(np.int64),
            "weak": rng.standard_normal((u, 1) + sp).astype(np.float32),
        })
        inputs[-1]["strong"] = (1.2 * inputs[-1]["weak"] + 0.1
                                + 0.3 * rng.standard_normal((u, 1) + sp)).astype(np.float32)

    def build(dtype):
        nets = []
        for role in ("student", "teacher1", "teacher2"):
            net = make_net(off, arch, torch)
            nets.append(load(net, hashed_state(net, cfg[role]), dtype, torch))
        return nets

    # The threshold: the median of the first step's fused confidence (float64), so that about
    # half of the voxels pass (random networks are far from any published threshold).
    nets = build(torch.float64)
    with torch.no_grad():
        nets[1].train()
        nets[2].eval()
        x = torch.from_numpy(inputs[0]["weak"]).double()
        _, conf, _, _ = fuse(torch, torch.softmax(nets[1](x), 1), torch.softmax(nets[2](x), 1), 1.0)
    cfg["conf_threshold"] = float(np.round(np.median(conf.numpy()), 3))
    del nets

    fx = Fixture(f"iteration{dim}d", (
        f"Two complete AD-MT iterations (train_post_{dim}d_aut.py order, official functions) from "
        "step `start_iteration` with a fresh SGD (lr `lr`, poly after each step): student, teacher "
        "1, teacher 2 from splitmix-uniform-v1 seeds; alternation period 1 (official "
        "AlternateUpdate), so it0 updates teacher 1 (train mode) with the strong view `it0.strong` "
        "and it1 updates teacher 2 with CutMix of the weak view (draws it1.cutmix.*; the coin "
        "`it1.coin`). Per iteration: the loss terms, the compromise target (`it<k>.target`, 255 = "
        "below the threshold), and summaries after the step of the student's weights "
        "(`it<k>.after.<key>`), its momentum buffers (`it<k>.momentum.<key>`) and both teachers' "
        "weights and running statistics (`it<k>.teacher1.<key>`, `it<k>.teacher2.<key>`)"), cfg)
    for it, inp in enumerate(inputs):
        for k, v in inp.items():
            fx.put(f"it{it}.{k}", v)
    nets0 = build(torch.float32)
    for role, net in zip(("student", "teacher1", "teacher2"), nets0):
        init_summaries(fx, role, hashed_state(net, cfg[role]))

    res = {}
    for dtype in (torch.float64, torch.float32):
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        random.seed(args.seed)
        student, ema_model, ema_model_another = build(dtype)
        margins = Margins(torch).watch(student, ema_model, ema_model_another) if dtype == torch.float64 else None
        student.train()
        optimizer = torch.optim.SGD(student.parameters(), lr=cfg["lr"], momentum=0.9, weight_decay=1e-4)
        alternate = off.train_utils.AlternateUpdate(cfg["alternate_period"], initial_flag=True, flag_random=True)
        args_d = {"consistency": cfg["consistency"], "consistency_rampup": cfg["consistency_rampup"]}
        dice_loss = off.losses.DiceLoss(nc)
        ce_loss = torch.nn.CrossEntropyLoss()
        out = {}
        for it, inp in enumerate(inputs):
            k = k0 + it
            img_lb_w = torch.from_numpy(inp["labeled"]).to(dtype)
            target_lb = torch.from_numpy(inp["labels"])
            img_ulb_w = torch.from_numpy(inp["weak"]).to(dtype)
            img_ulb_s = torch.from_numpy(inp["strong"]).to(dtype)
            r = {}
            # 2) the teachers (the updated one in train mode), fused
            with torch.no_grad():
                if alternate.get_alternate_state():
                    ema_model.train()
                    ema_model_another.eval()
                else:
                    ema_model_another.train()
                    ema_model.eval()
                p1 = torch.softmax(ema_model(img_ulb_w), dim=1)
                p2 = torch.softmax(ema_model_another(img_ulb_w), dim=1)
                _, pseudo_logits, pseudo_outputs, conflict = fuse(torch, p1, p2, cfg["temperature"])
            # 3) CutMix while teacher 2 is updated
            cut = None
            if not alternate.get_alternate_state():
                coin = np.random.random()
                r["coin"] = coin
                if coin < cfg["cutmix_prob"]:
                    with Recorder(off, torch) as cut:
                        img_ulb_s, pseudo_outputs, pseudo_logits, conflict = mixer(
                            img_ulb_w, pseudo_outputs, pseudo_logits, conflict)
                else:
                    img_ulb_s = img_ulb_w.clone()
            r["draws"] = cut
            # 4) one student pass
            pred = student(torch.cat((img_lb_w, img_ulb_w, img_ulb_s)))
            pred_lb = pred[:l]
            pred_ulb_w, pred_ulb_s = pred[l:].chunk(2)
            with torch.no_grad():
                s_conf, s_label = torch.max(torch.softmax(pred_ulb_w.detach(), dim=1), dim=1)
            # 5) supervised loss
            ce, dice, loss_lb = sup_loss(off, torch, pred_lb, target_lb, nc)
            # 6) unsupervised loss (conflict weight 1.0: no consist/conflict split)
            theta = cfg["conf_threshold"]
            pseudo_outputs, pseudo_logits, _ = off.train_utils.get_compromise_pseudo_btw_tea_stu(
                pseudo_outputs, pseudo_logits, s_label, s_conf, "pixel_confidence", conflict)
            mask = pseudo_logits.ge(theta)
            if cfg["unsup_loss"] == "ce":
                tgt = pseudo_outputs.clone()
                tgt[~mask] = -100
                loss_ulb = torch.nn.functional.cross_entropy(pred_ulb_s, tgt.long(), ignore_index=-100, reduction="mean")
            else:
                loss_ulb = dice_loss(torch.softmax(pred_ulb_s, dim=1), pseudo_outputs.unsqueeze(1).to(dtype),
                                     ignore=(pseudo_logits < theta).to(dtype))
            shown = pseudo_outputs.clone()
            shown[~mask] = 255
            r["target"] = shown.numpy()
            # 7) total loss
            weight = script.get_current_consistency_weight(k // 150, args_d)
            loss = loss_lb + weight * loss_ulb
            # 8) student update
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            # 9) EMA into the updated teacher, alternation
            if alternate.get_alternate_state():
                script.update_ema_variables(student, ema_model, cfg["ema_decay"], k // 2, args_d)
            else:
                script.update_ema_variables(student, ema_model_another, cfg["ema_decay"], k // 2, args_d)
            alternate.update()
            # 10) poly LR for the next step
            lr_ = base_lr * (1.0 - k / max_it) ** 0.9
            for group in optimizer.param_groups:
                group["lr"] = lr_
            r["loss"] = np_of(loss)
            r["loss_sup"] = np_of(loss_lb)
            r["loss_ce"] = np_of(ce)
            r["loss_dice"] = np_of(dice)
            r["loss_unsup"] = np_of(loss_ulb)
            r["unsup_weight"] = np.float64(weight)
            sd = student.state_dict()
            for key in param_keys(student):
                r["after." + key] = np_of(sd[key])
                r["momentum." + key] = np_of(optimizer.state[dict(student.named_parameters())[key]]["momentum_buffer"])
            for key in buffer_keys(student):
                r["after." + key] = np_of(sd[key])
            for name, t in (("teacher1", ema_model), ("teacher2", ema_model_another)):
                tsd = t.state_dict()
                for key in param_keys(t) + buffer_keys(t):
                    r[f"{name}.{key}"] = np_of(tsd[key])
            out[it] = r
        res[dtype] = out
        if margins is not None:
            margins.close()
            margin = margins.min
            if margin < TIE_MARGIN and not complete:
                return None, margin
    for it in range(2):
        r64, r32 = res[torch.float64][it], res[torch.float32][it]
        if r64["draws"] is not None:
            assert r32["draws"] is not None and draws_equal(r64["draws"], r32["draws"]), "runs drew differently"
            put_draws(fx, f"it{it}.cutmix.", r64["draws"], sp)
        if "coin" in r64:
            fx.config[f"it{it}.coin"] = r64["coin"]
        fx.label_result(f"it{it}.target", r64["target"], r32["target"])
        for key in r64:
            if key in ("draws", "coin", "target"):
                continue
            scalar = key.startswith("loss") or key == "unsup_weight"
            fx.result(f"it{it}.{key}", np.reshape(r64[key], (1,)) if scalar else r64[key],
                      np.reshape(r32[key], (1,)) if scalar else r32[key], as_summary=not scalar)
    return fx, margin


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--code", required=True, help="checkout of github.com/ZhenZHAO/AD-MT (holding code/)")
    ap.add_argument("--out", default="tests/fixtures", help="fixtures go to OUT/admt/")
    ap.add_argument("--seed", type=int, default=2023)
    ap.add_argument("--alt", action="store_true", help="other shapes and batch splits")
    ap.add_argument("--commit", default="03ef84c", help="the official commit, recorded in each fixture")
    ap.add_argument("--only", default=None, help="comma-separated fixture names")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    off = import_official(args.code)
    if off.stood_in:
        print("stand-ins for modules not installed (not on the computed path): " + ", ".join(off.stood_in))
    makers = {
        "vnet": lambda: fixture_model(off, torch, args, "vnet"),
        "unet2d": lambda: fixture_model(off, torch, args, "unet"),
        "fusion": lambda: fixture_fusion(off, torch, args),
        "cutmix": lambda: fixture_cutmix(off, torch, args),
        "losses": lambda: fixture_losses(off, torch, args),
        "ema": lambda: fixture_ema(off, torch, args),
        "iteration3d": lambda: fixture_iteration(off, torch, args, 3),
        "iteration2d": lambda: fixture_iteration(off, torch, args, 2),
    }
    only = args.only.split(",") if args.only else list(makers)
    for name in only:
        fx = makers[name]()
        fx.config.update({"official": f"ZhenZHAO/AD-MT@{args.commit}", "generator": "tools/admt_golden.py",
                          "seed": args.seed, "alt": bool(args.alt), "torch": torch.__version__})
        fx.write(os.path.join(args.out, "admt"))


if __name__ == "__main__":
    main()
