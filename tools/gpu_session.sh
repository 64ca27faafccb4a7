#!/usr/bin/env bash
# The one prepared command of a GPU-machine session (after tools/stage_gpu.sh here, with
# carry [".gl"]): everything the performance issue asks to measure, in one call, same card,
# same minutes. Prints the tables as it goes; every JSON, log and table lands in $WORK, packed
# at the end into $OUT/gpu_results.tgz when $OUT is set (the device tool brings $OUT back, at
# most 8 files).
#
#   1. the card and the adapters wgpu sees;
#   2. ours, f32 path (the reference), tiles autotuned: ssnet bench --size full --tune;
#   3. ours, tensor cores (f16 cooperative matrices): the same with --tensor-cores on;
#   4. PyTorch on the same card: tools/bench_torch.py with its defaults (TF32 convolutions)
#      and with --tf32 off (pure FP32), the ratio tables against both of ours;
#   5. a short real-data run (ACDC subset, UNet) with each path: the validation Dice;
#   6. ours, f32, submitting every 256 dispatches (SSNET_SUBMIT_EVERY) instead of at the
#      readbacks: does overlapping the CPU's recording with the GPU pay on this card?
#
# Environment: WORK (default gpu_out), STEPS (default "1 2 3 4 5"), SIZE (full; tiny for a
# dry run on any adapter), ACDC_ITERS (default 300), PYTHON (default python3). Each step is
# bounded by `timeout` so one hang cannot eat the call. Steps 1-4 fit one 10-minute call
# (timeouts 560 s in all), steps 5 and 6 a second one: STEPS="1 2 3 4", then STEPS="5 6".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
WORK=${WORK:-gpu_out}
SIZE=${SIZE:-full}
STEPS=${STEPS:-1 2 3 4 5}
ITERS=${ACDC_ITERS:-300}
PYTHON=${PYTHON:-python3}
SSNET=${SSNET:-.gl/ssnet}
mkdir -p "$WORK"
has() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
t0=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }

if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$icd" ] && ! "$SSNET" devices 2>/dev/null | grep -qi nvidia; then
    export VK_DRIVER_FILES=$icd
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
export SSNET_TUNE_FILE=$WORK/tune.json

if has 1; then
    stamp "card: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n1); date $(date -u '+%F %T UTC'); git $(git rev-parse --short HEAD 2>/dev/null)"
    "$SSNET" devices | tee "$WORK/devices.txt"
fi
if has 2; then
    stamp "ours, f32"
    timeout 200 "$SSNET" bench --size "$SIZE" --tune --json "$WORK/ours_f32.json" 2>&1 | tee "$WORK/ours_f32.log"
fi
if has 3; then
    stamp "ours, tensor cores"
    timeout 120 "$SSNET" --tensor-cores on bench --size "$SIZE" --tune --no-layers --json "$WORK/ours_tc.json" 2>&1 | tee "$WORK/ours_tc.log"
fi
if has 4; then
    stamp "pytorch, defaults (TF32 convolutions)"
    timeout 140 "$PYTHON" tools/bench_torch.py --size "$SIZE" --json "$WORK/torch.json" > "$WORK/torch.log" 2>&1
    tail -n 25 "$WORK/torch.log"
    stamp "pytorch, --tf32 off (FP32)"
    timeout 100 "$PYTHON" tools/bench_torch.py --size "$SIZE" --tf32 off --no-layers --json "$WORK/torch_fp32.json" > "$WORK/torch_fp32.log" 2>&1
    tail -n 8 "$WORK/torch_fp32.log"
    for pair in "ours_f32 torch" "ours_f32 torch_fp32" "ours_tc torch"; do
        set -- $pair
        if [ -f "$WORK/$1.json" ] && [ -f "$WORK/$2.json" ]; then
            stamp "compare $1 / $2"
            "$PYTHON" tools/compare_bench.py "$WORK/$1.json" "$WORK/$2.json" | tee "$WORK/compare_${1}_vs_${2}.txt"
        fi
    done
fi
if has 5; then
    for mode in off on; do
        stamp "ACDC subset, $ITERS iterations, tensor cores $mode"
        timeout 240 "$SSNET" --tensor-cores "$mode" train --preset acdc --data .gl/acdc \
            --max-iterations "$ITERS" --val-interval "$ITERS" --val-start 0 --snapshots false \
            --final-eval false --out "$WORK/acdc_$mode" --overwrite > "$WORK/acdc_$mode.log" 2>&1
        echo "exit $?; validation: $(tail -n 1 "$WORK/acdc_$mode/val.jsonl" 2>/dev/null)"
    done
fi
if has 6; then
    stamp "ours, f32, SSNET_SUBMIT_EVERY=256"
    SSNET_SUBMIT_EVERY=256 timeout 100 "$SSNET" bench --size "$SIZE" --no-layers --json "$WORK/ours_f32_submit256.json" 2>&1 | tee "$WORK/ours_f32_submit256.log"
fi
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    tar czf "$OUT/gpu_results.tgz" -C "$WORK" .
fi
stamp "done"
