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
#   7. AD-MT: ours f32 (tuned) and the OFFICIAL AD-MT step in PyTorch (.gl/admt/code, staged
#      by tools/stage_gpu.sh) with its defaults (TF32) and with --tf32 off: the admt3d and
#      admt2d rows and their ratio tables.
#
# Steps 2-4 run the SS-Net rows, step 7 the AD-MT rows.
# Environment: WORK (default gpu_out), STEPS (default "1 2 3 4 5"), SIZE (full; tiny for a
# dry run on any adapter), ACDC_ITERS (default 300), PYTHON (default python3), ADMT_CODE
# (default .gl/admt/code). Each step is bounded by `timeout` so one hang cannot eat the call.
# Steps 1-4 fit one 10-minute call (timeouts 560 s in all), steps 5 and 6 a second one, step 7
# (420 s) a third or, with step 1, the only one: STEPS="1 2 3 4", STEPS="5 6", STEPS="1 7".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
WORK=${WORK:-gpu_out}
SIZE=${SIZE:-full}
STEPS=${STEPS:-1 2 3 4 5}
ITERS=${ACDC_ITERS:-300}
PYTHON=${PYTHON:-python3}
SSNET=${SSNET:-.gl/ssnet}
ADMT_CODE=${ADMT_CODE:-.gl/admt/code}
SSNET_ROWS="iteration3d iteration2d inference3d"
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
    timeout 200 "$SSNET" bench --size "$SIZE" --tune $SSNET_ROWS layers --json "$WORK/ours_f32.json" 2>&1 | tee "$WORK/ours_f32.log"
fi
if has 3; then
    stamp "ours, tensor cores"
    timeout 120 "$SSNET" --tensor-cores on bench --size "$SIZE" --tune $SSNET_ROWS --json "$WORK/ours_tc.json" 2>&1 | tee "$WORK/ours_tc.log"
fi
if has 4; then
    stamp "pytorch, defaults (TF32 convolutions)"
    timeout 140 "$PYTHON" tools/bench_torch.py --size "$SIZE" $SSNET_ROWS layers --json "$WORK/torch.json" > "$WORK/torch.log" 2>&1
    tail -n 25 "$WORK/torch.log"
    stamp "pytorch, --tf32 off (FP32)"
    timeout 100 "$PYTHON" tools/bench_torch.py --size "$SIZE" --tf32 off $SSNET_ROWS --json "$WORK/torch_fp32.json" > "$WORK/torch_fp32.log" 2>&1
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
if has 7; then
    stamp "AD-MT, ours, f32"
    timeout 240 "$SSNET" bench --size "$SIZE" --tune admt3d admt2d --json "$WORK/ours_admt.json" 2>&1 | tee "$WORK/ours_admt.log"
    stamp "AD-MT, the official code in pytorch, defaults (TF32 convolutions)"
    timeout 100 "$PYTHON" tools/bench_torch.py --size "$SIZE" --admt-code "$ADMT_CODE" admt3d admt2d --json "$WORK/torch_admt.json" > "$WORK/torch_admt.log" 2>&1
    tail -n 8 "$WORK/torch_admt.log"
    stamp "AD-MT, the official code in pytorch, --tf32 off (FP32)"
    timeout 80 "$PYTHON" tools/bench_torch.py --size "$SIZE" --tf32 off --admt-code "$ADMT_CODE" admt3d admt2d --json "$WORK/torch_admt_fp32.json" > "$WORK/torch_admt_fp32.log" 2>&1
    tail -n 8 "$WORK/torch_admt_fp32.log"
    for pair in "ours_admt torch_admt" "ours_admt torch_admt_fp32"; do
        set -- $pair
        if [ -f "$WORK/$1.json" ] && [ -f "$WORK/$2.json" ]; then
            stamp "compare $1 / $2"
            "$PYTHON" tools/compare_bench.py "$WORK/$1.json" "$WORK/$2.json" | tee "$WORK/compare_${1}_vs_${2}.txt"
        fi
    done
fi
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    tar czf "$OUT/gpu_results.tgz" -C "$WORK" .
fi
stamp "done"
