#!/usr/bin/env python3
"""Put two benchmark reports side by side: ours (`ssnet bench --json`) and PyTorch's
(`tools/bench_torch.py --json`), both with the keys documented in bench_torch.py.

    python3 tools/compare_bench.py ours.json torch.json [--markdown]

For the SS-Net iterations, inference, the AD-MT steps and every layer pass present in both (a
row neither report ran is left out; one side's missing row shows as -), it prints the times,
ours/PyTorch (the time ratio: below 1 means we are faster) and the speed-up PyTorch/ours (above 1
means we are faster); for peak memory ours/PyTorch. Times are compared on the GPU time
(`gpu_ms`: our GPU timestamps, PyTorch's CUDA events) when both reports have it for that row,
else on the wall clock (`ms`); the `by` column says which. Layer rows are matched by (net, layer,
pass), and failing that by the convolution's geometry parsed from the shape string (both
`4x32x56x56x40 k3 -> 32` and `x [4, 32, 56, 56, 40] w [32, 32, 3, 3, 3] s1 p1` are
understood). A report file may also be a log whose last JSON line is the report. Standard
library only.
"""

import argparse
import json
import math
import re
import signal
import sys


def load_report(path):
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        sys.exit("compare_bench: cannot read %s: %s" % (path, e))
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    sys.exit("compare_bench: %s holds no JSON report" % path)


def geometry(shape):
    """A hashable description of a conv from either shape format, or None."""
    if not shape:
        return None
    m = re.match(r"^\s*([\dx]+)\s+k(\d+)(?:\s+s(\d+))?(\s+transposed)?\s*->\s*(\d+)\s*$", shape)
    if m:
        dims = tuple(int(v) for v in m.group(1).split("x"))
        return (dims, int(m.group(2)), int(m.group(3) or 1), bool(m.group(4)), int(m.group(5)))
    m = re.match(r"^\s*x\s*\[([\d,\s]+)\]\s*w\s*\[([\d,\s]+)\]\s*s(\d+)(\s+p\d+)?", shape)
    if m:
        dims = tuple(int(v) for v in m.group(1).split(","))
        w = [int(v) for v in m.group(2).split(",")]
        transposed = m.group(4) is None      # the Rust format prints no padding for a transposed conv
        co = w[1] if transposed else w[0]
        return (dims, w[2], int(m.group(3)), transposed, co)
    return None


def ratio(a, b):
    return a / b if (a and b) else float("nan")


def fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def rate(v):
    """GFLOP/s with sensible precision."""
    return "-" if not v else format(v, ".0f" if v >= 100 else ".1f" if v >= 1 else ".3f")


def basis(o, p):
    """("gpu_ms", "gpu_gflops", "GPU") when both rows have a GPU time, else the wall clock's."""
    if o.get("gpu_ms") and p.get("gpu_ms"):
        return "gpu_ms", "gpu_gflops", "GPU"
    return "ms", "gflops", "wall"


def geomean(vals):
    vals = [v for v in vals if v and v > 0 and not math.isnan(v)]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description="Compare ssnet bench JSON with bench_torch.py JSON.")
    ap.add_argument("ours")
    ap.add_argument("torch")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    a = ap.parse_args(argv)
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # quiet when piped into head
    ours, pt = load_report(a.ours), load_report(a.torch)

    def table(header, rows):
        if a.markdown:
            print("| " + " | ".join(header) + " |")
            print("|" + "|".join("---" for _ in header) + "|")
            for r in rows:
                print("| " + " | ".join(r) + " |")
        else:
            widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
            line = lambda r: "  ".join(str(x).ljust(w) if i < 2 else str(x).rjust(w) for i, (x, w) in enumerate(zip(r, widths)))
            print(line(header))
            for r in rows:
                print(line(r))
        print()

    for name, rep in (("ours", ours), ("pytorch", pt)):
        print("%-8s engine %s, adapter %s, size %s, tf32 %s, tensor cores %s, GPU timer %s, tuned %s" % (
            name + ":", rep.get("engine"), rep.get("adapter"), rep.get("size"), rep.get("tf32"),
            rep.get("tensor_cores", "-"), rep.get("gpu_timer") or "none (wall clock only)",
            rep.get("tuned", "-")))
    if ours.get("size") != pt.get("size"):
        print("WARNING: the reports are of different sizes (%s vs %s)" % (ours.get("size"), pt.get("size")))
    if ours.get("adapter") and pt.get("adapter") and not (
            set(re.findall(r"[a-z]\d{2,4}", str(ours["adapter"]).lower()))
            & set(re.findall(r"[a-z]\d{2,4}", str(pt["adapter"]).lower()))):
        print("note: adapter names differ; a comparison is only fair on the same card in the same run")
    print()

    rows = []
    for key, label in (("iteration3d", "SS-Net 3D iteration (VNet)"), ("iteration2d", "SS-Net 2D iteration (UNet)"),
                       ("inference3d", "VNet inference, one patch"), ("admt3d", "AD-MT 3D step (VNet, LA)"),
                       ("admt2d", "AD-MT 2D step (UNet, ACDC)")):
        o, p = ours.get(key) or {}, pt.get(key) or {}
        if not o and not p:
            continue                     # a row neither report ran
        tk, rk, by = basis(o, p)
        r = ratio(o.get(tk), p.get(tk))
        if o.get("batch") and p.get("batch") and o["batch"] != p["batch"]:
            label += " (batches differ!)"
        rows.append([label, str(o.get("batch", "-")).replace(" ", ""), by, fmt(o.get(tk), ".2f"), fmt(p.get(tk), ".2f"),
                     fmt(r, ".3f"), fmt(1 / r if r == r and r else float("nan"), ".2f") + "x",
                     rate(o.get(rk)), rate(p.get(rk))])
    table(["what", "batch", "by", "ours ms", "torch ms", "ours/torch", "speed-up", "ours GFLOP/s", "torch GFLOP/s"], rows)

    gib = float(1 << 30)
    rows = []
    for key, label in (("peak_memory_3d_bytes", "peak memory, 3D iteration"), ("peak_memory_2d_bytes", "peak memory, 2D iteration"),
                       ("peak_memory_admt3d_bytes", "peak memory, AD-MT 3D step"),
                       ("peak_memory_admt2d_bytes", "peak memory, AD-MT 2D step")):
        o, p = ours.get(key), pt.get(key)
        if o is None and p is None:
            continue
        rows.append([label, "", fmt(o / gib if o else None, ".2f"), fmt(p / gib if p else None, ".2f"),
                     fmt(ratio(o, p), ".3f")])
    table(["what", "", "ours GiB", "torch GiB", "ours/torch"], rows)

    by_name = {(l.get("net"), l.get("layer"), l.get("pass")): l for l in pt.get("layers") or []}
    by_geom = {}
    for l in pt.get("layers") or []:
        g = geometry(l.get("shape"))
        if g is not None:
            by_geom.setdefault((l.get("net"), g, l.get("pass")), l)
    rows, per_pass, unmatched = [], {}, []
    for l in ours.get("layers") or []:
        p = by_name.get((l.get("net"), l.get("layer"), l.get("pass")))
        if p is None:
            g = geometry(l.get("shape"))
            p = by_geom.get((l.get("net"), g, l.get("pass"))) if g is not None else None
        if p is None:
            unmatched.append("%s %s %s" % (l.get("net"), l.get("layer"), l.get("pass")))
            continue
        tk, rk, by = basis(l, p)
        r = ratio(l.get(tk), p.get(tk))
        per_pass.setdefault(l.get("pass"), []).append(r)
        rows.append(["%s %s" % (l.get("net"), p.get("layer")), "%s %s" % (p.get("shape"), l.get("pass")), by,
                     fmt(l.get(tk), ".3f"), fmt(p.get(tk), ".3f"), fmt(r, ".3f"),
                     fmt(1 / r if r == r and r else float("nan"), ".2f") + "x",
                     rate(l.get(rk)), rate(p.get(rk))])
    if rows:
        table(["layer", "shape / pass", "by", "ours ms", "torch ms", "ours/torch", "speed-up", "ours GFLOP/s",
               "torch GFLOP/s"], rows)
        summary = [[k, str(len(v)), fmt(geomean(v), ".3f"), fmt(1 / geomean(v), ".2f") + "x"] for k, v in sorted(per_pass.items())]
        table(["pass", "layers", "geomean ours/torch", "speed-up"], summary)
    elif ours.get("layers") or pt.get("layers"):
        print("no layer rows matched between the two reports")
    if unmatched:
        print("%d of our layer rows have no PyTorch counterpart: %s" % (len(unmatched), "; ".join(unmatched[:8])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
