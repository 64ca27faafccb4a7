#!/usr/bin/env bash
# Run our engine's benchmark and the PyTorch baseline on the same card in the same run, then
# compare them. Meant for the GPU machine, from the repository root:
#
#     bash tools/bench_side_by_side.sh                # full size, results in $OUT (or ./bench_out)
#     SIZE=tiny bash tools/bench_side_by_side.sh      # quick check
#
# Environment: SIZE (full|tiny, default full), OUT (result folder; the GPU machine's $OUT
# comes back to the caller), SSNET (our binary, default ./target/release/ssnet),
# PYTHON (default python3), ADMT_CODE (the official AD-MT code/ folder for PyTorch's admt3d /
# admt2d rows; default .gl/admt/code from tools/stage_gpu.sh), OURS_ARGS / TORCH_ARGS (extra
# flags for either side, e.g. TORCH_ARGS="--tf32 off"; row names go there too, e.g.
# OURS_ARGS="admt3d admt2d" TORCH_ARGS="admt3d admt2d"). Writes ours.json, torch.json,
# ours.log, torch.log, compare.txt.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

SIZE=${SIZE:-full}
OUT_DIR=${OUT:-bench_out}
SSNET=${SSNET:-./target/release/ssnet}
PYTHON=${PYTHON:-python3}
ADMT_CODE=${ADMT_CODE:-.gl/admt/code}
mkdir -p "$OUT_DIR"

echo "== date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
if command -v nvidia-smi >/dev/null 2>&1; then
    echo "== card: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n1)"
else
    echo "== card: nvidia-smi not found"
fi
echo "== size: $SIZE; git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

# Vulkan loader: the NVIDIA driver may come without one (see shared/device/README.md).
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; then
    for d in shared/device/debs ../shared/device/debs /work/shared/device/debs; do
        if ls "$d"/*.deb >/dev/null 2>&1; then
            echo "== unpacking the Vulkan loader from $d"
            for f in "$d"/*.deb; do dpkg -x "$f" / ; done
            ldconfig
            break
        fi
    done
fi
if [ -x "$SSNET" ] && ! "$SSNET" devices 2>/dev/null | grep -qi nvidia; then
    icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    if [ -f "$icd" ]; then
        export VK_DRIVER_FILES=$icd
        echo "== no NVIDIA adapter listed; using VK_DRIVER_FILES=$icd"
    fi
fi

ours_rc=0
if [ -x "$SSNET" ]; then
    echo "== ours: $SSNET bench --size $SIZE --json $OUT_DIR/ours.json ${OURS_ARGS:-}"
    # shellcheck disable=SC2086
    "$SSNET" bench --size "$SIZE" --json "$OUT_DIR/ours.json" ${OURS_ARGS:-} 2>&1 | tee "$OUT_DIR/ours.log"
    ours_rc=${PIPESTATUS[0]}
else
    echo "== ours: $SSNET not found (build it with cargo build --release)"
    ours_rc=127
fi

# The PyTorch AD-MT rows run the official code; without it they are left out, loudly.
torch_rows=""
if [ ! -f "$ADMT_CODE/train_post_3d_aut.py" ]; then
    echo "== AD-MT rows: no official code at $ADMT_CODE (run tools/stage_gpu.sh or set ADMT_CODE); PyTorch runs the SS-Net rows only"
    torch_rows="iteration3d iteration2d inference3d layers"
fi
echo "== pytorch: $PYTHON tools/bench_torch.py --size $SIZE --admt-code $ADMT_CODE --json $OUT_DIR/torch.json ${TORCH_ARGS:-} $torch_rows"
# shellcheck disable=SC2086
"$PYTHON" tools/bench_torch.py --size "$SIZE" --admt-code "$ADMT_CODE" --json "$OUT_DIR/torch.json" ${TORCH_ARGS:-} $torch_rows 2>&1 | tee "$OUT_DIR/torch.log"
torch_rc=${PIPESTATUS[0]}

if [ "$ours_rc" -eq 0 ] && [ "$torch_rc" -eq 0 ]; then
    echo "== comparison (ours/torch < 1 and speed-up > 1 mean our engine is faster)"
    "$PYTHON" tools/compare_bench.py "$OUT_DIR/ours.json" "$OUT_DIR/torch.json" | tee "$OUT_DIR/compare.txt"
    exit "${PIPESTATUS[0]}"
fi
echo "== no comparison: ours exited $ours_rc, pytorch exited $torch_rc"
exit 1
