#!/usr/bin/env python3
"""Convert a PyTorch SS-Net or AD-MT checkpoint (.pth) to safetensors with the same tensor names.

    python3 tools/pth_to_safetensors.py VNet_best_model.pth [out.safetensors] [--check]
    python3 tools/pth_to_safetensors.py vnet_best_stu_model.pth --method admt   # AD-MT, checked
    python3 tools/pth_to_safetensors.py out.safetensors --check        # inspect only
    python3 tools/pth_to_safetensors.py a.pth --compare /work/shared/golden/models/vnet_init.safetensors

The input is what the reference's training scripts save (`torch.save(model.state_dict())`,
e.g. `VNet_best_model.pth`, `unet_best_model.pth`): a state_dict, possibly wrapped as
{'state_dict': ...}, {'model': ...}, {'model_state_dict': ...} or {'net': ...}, possibly with the
`module.` prefix that DataParallel adds. The output holds every tensor as float32, contiguous,
under its state_dict name, without the `num_batches_tracked` counters; `ssnet predict
--checkpoint out.safetensors` loads it directly.

AD-MT (github.com/ZhenZHAO/AD-MT; `{model}_best_stu_model.pth`, `{model}_best_tea_model.pth`)
saves heads-free networks: its VNet has flat keys (`block_one.conv.0.weight`, `out_conv.weight`:
SS-Net's without the `encoder.`/`decoder.` prefix), its UNet SS-Net's keys without the
projection/prediction heads and selectors. `--method auto` (the default) tells them apart by the
names; the method is written to the `ssnet.variant` metadata (`ssnet` or `admt`), which the
engine reads. `--method admt` / `--method ssnet` insist, and fail when the names disagree.

Needs `torch` to read the .pth. Writes with the `safetensors` package when installed, else with
a small built-in writer (numpy needed then). `--check` and `--compare` read safetensors headers
with the standard library only.
"""

import argparse
import json
import os
import re
import struct
import sys

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "network")


class ConvertError(Exception):
    pass


# ---------------------------------------------------------------- safetensors, stdlib only

def read_header(path):
    """The JSON header of a safetensors file: {name: {dtype, shape, data_offsets}, ...}."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ConvertError("%s: too short to be a safetensors file" % path)
            (n,) = struct.unpack("<Q", raw)
            if n > 100 * 1024 * 1024:
                raise ConvertError("%s: implausible header length %d (not a safetensors file?)" % (path, n))
            header = json.loads(f.read(n).decode("utf-8"))
    except OSError as e:
        raise ConvertError("cannot read %s: %s" % (path, e))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConvertError("%s: header is not valid JSON (%s); not a safetensors file?" % (path, e))
    return header


def tensor_entries(header):
    return {k: v for k, v in header.items() if k != "__metadata__"}


def print_check(path, header=None):
    header = header if header is not None else read_header(path)
    entries = tensor_entries(header)
    total = 0
    for name in sorted(entries):
        e = entries[name]
        n = 1
        for s in e["shape"]:
            n *= s
        total += n
        print("%-56s %-4s %s" % (name, e["dtype"], "x".join(str(s) for s in e["shape"]) or "scalar"))
    names = set(entries)
    arch = ("VNet" if {"encoder.block_one.conv.0.weight", "block_one.conv.0.weight"} & names
            else "UNet" if "encoder.in_conv.conv_conv.0.weight" in names else "unknown architecture")
    method = detect_method(names)
    arch = "%s (%s)" % (arch, "AD-MT, heads-free" if method == "admt" else "SS-Net" if method == "ssnet" else "?")
    dtypes = sorted({e["dtype"] for e in entries.values()})
    print("%s: %d tensors, %d values (%s), %s" % (path, len(entries), total, ", ".join(dtypes), arch))
    meta = header.get("__metadata__")
    if meta:
        print("metadata: %s" % json.dumps(meta)[:300])


def compare_names(path, reference):
    got = set(tensor_entries(read_header(path)))
    ref_entries = tensor_entries(read_header(reference))
    want = {k for k in ref_entries if not k.endswith("num_batches_tracked")}
    missing, extra = sorted(want - got), sorted(got - want)
    if missing or extra:
        print("names differ from %s: %d missing %s, %d extra %s" % (
            reference, len(missing), missing[:10], len(extra), extra[:10]))
        return False
    print("names match %s exactly (%d tensors)" % (reference, len(got)))
    return True


def detect_method(names):
    """'admt', 'ssnet' or None from a checkpoint's tensor names (ADMT.md §2)."""
    names = set(names)
    heads = any(n.startswith(("projection_head.", "prediction_head.", "contrastive_class_selector"))
                for n in names)
    if "block_one.conv.0.weight" in names and "out_conv.weight" in names:
        return "admt"  # AD-MT's flat VNet
    if "encoder.block_one.conv.0.weight" in names or "encoder.in_conv.conv_conv.0.weight" in names:
        return "ssnet" if heads else ("admt" if "encoder.in_conv.conv_conv.0.weight" in names else None)
    return None


def write_safetensors_fallback(tensors, path, metadata):
    """A minimal safetensors writer (F32 only), used when the package is absent."""
    try:
        import numpy as np
    except ImportError:
        raise ConvertError("writing safetensors needs the 'safetensors' package (pip install safetensors) "
                           "or numpy; neither is installed")
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name].numpy().astype("<f4"))
        data = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------- .pth -> tensors

def load_pth(path, unsafe_pickle):
    try:
        import torch
    except ImportError:
        raise ConvertError("reading a .pth checkpoint needs PyTorch (pip install torch); "
                           "it is not installed for %s" % sys.executable)
    if not os.path.isfile(path):
        raise ConvertError("%s: no such file" % path)
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
    except TypeError:  # PyTorch < 1.13 has no weights_only
        if not unsafe_pickle:
            raise ConvertError("this PyTorch is too old for a safe (weights_only) load; "
                               "rerun with --unsafe-pickle if you trust %s" % path)
        return torch.load(path, map_location="cpu")
    except Exception as e:
        msg = str(e)
        glob = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
        if not unsafe_pickle and glob:
            raise ConvertError("%s pickles Python objects besides tensors (%s), which a safe load refuses. "
                               "If you trust the file, rerun with --unsafe-pickle (the classes must be "
                               "importable)." % (path, glob.group(1)))
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", msg, re.S)
        raise ConvertError("cannot load %s with torch.load (not a PyTorch checkpoint, or damaged?): %s"
                           % (path, (detail.group(1) if detail else msg.splitlines()[0] if msg else type(e).__name__)))


def extract_state_dict(obj):
    import torch
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if not isinstance(obj, dict):
        raise ConvertError("the checkpoint is a %s, not a state_dict (a dict of tensors)" % type(obj).__name__)
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, torch.nn.Module):
            return inner.state_dict()
        if isinstance(inner, dict) and inner and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    if any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise ConvertError("no tensors found; top-level keys: %s (expected a state_dict or one wrapped under %s)"
                       % (sorted(map(str, obj))[:20], "/".join(WRAPPER_KEYS)))


def clean_tensors(sd):
    import torch
    out, skipped = {}, []
    strip = all(k.startswith("module.") for k in sd) and len(sd) > 0
    for key, value in sd.items():
        name = key[len("module."):] if strip or key.startswith("module.") else key
        if name.endswith("num_batches_tracked"):
            continue
        if not isinstance(value, torch.Tensor):
            skipped.append(key)
            continue
        if not (value.is_floating_point() or value.dtype in (torch.int64, torch.int32, torch.uint8)):
            raise ConvertError("tensor %s has dtype %s, which cannot become float32" % (key, value.dtype))
        if name in out:
            raise ConvertError("two entries map to the name %s after stripping 'module.'" % name)
        out[name] = value.detach().to("cpu", torch.float32).contiguous().clone()
    if skipped:
        print("note: skipped %d non-tensor entries: %s" % (len(skipped), skipped[:10]), file=sys.stderr)
    if not out:
        raise ConvertError("the state_dict has no tensors left after dropping num_batches_tracked")
    return out


def convert(src, dst, unsafe_pickle=False, method="auto"):
    tensors = clean_tensors(extract_state_dict(load_pth(src, unsafe_pickle)))
    found = detect_method(tensors)
    if method != "auto" and found != method:
        raise ConvertError("%s does not look like an %s network (its names say %s; first: %s)"
                           % (src, "AD-MT" if method == "admt" else "SS-Net", found or "neither",
                              sorted(tensors)[:3]))
    metadata = {"format": "pt", "source": os.path.basename(src), "converted_by": "tools/pth_to_safetensors.py"}
    if found is not None:
        metadata["ssnet.variant"] = found
    try:
        from safetensors.torch import save_file
    except ImportError:
        save_file = None
    tmp = dst + ".tmp"
    if save_file is not None:
        save_file(tensors, tmp, metadata=metadata)
    else:
        write_safetensors_fallback(tensors, tmp, metadata)
    os.replace(tmp, dst)
    print("wrote %s: %d tensors (float32) from %s (%s)" % (dst, len(tensors), src, found or "unknown method"))
    return tensors


def main(argv=None):
    ap = argparse.ArgumentParser(description="Convert a PyTorch SS-Net or AD-MT checkpoint to safetensors.")
    ap.add_argument("input", help="a .pth checkpoint, or a .safetensors file to inspect with --check")
    ap.add_argument("output", nargs="?", help="output .safetensors (default: input with .safetensors)")
    ap.add_argument("--check", action="store_true", help="print the tensor names and shapes of the result")
    ap.add_argument("--compare", metavar="REF", help="exit 1 unless the tensor names equal REF's (a .safetensors)")
    ap.add_argument("--method", choices=("auto", "ssnet", "admt"), default="auto",
                    help="which method's network the .pth holds (auto: from the names)")
    ap.add_argument("--unsafe-pickle", action="store_true",
                    help="allow arbitrary pickled objects in the .pth (only for files you trust)")
    a = ap.parse_args(argv)
    try:
        if a.input.endswith(".safetensors"):
            if a.output:
                raise ConvertError("the input is already safetensors; use --check/--compare to inspect it")
            target = a.input
            if not (a.check or a.compare):
                a.check = True
        else:
            target = a.output or os.path.splitext(a.input)[0] + ".safetensors"
            convert(a.input, target, a.unsafe_pickle, a.method)
        if a.check:
            print_check(target)
        if a.compare and not compare_names(target, a.compare):
            return 1
    except ConvertError as e:
        print("pth_to_safetensors: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
