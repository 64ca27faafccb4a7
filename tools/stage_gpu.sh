#!/usr/bin/env bash
# Prepare everything one GPU-machine call needs, in the ignored folder .gl/ (the device tool
# sends the working tree, not ../shared, and carries at most 64 MiB):
#   .gl/*.deb          the Vulkan loader (shared/device/debs: the machine has none)
#   .gl/ssnet          the release binary built here (x86-64, needs libc + libvulkan.so.1)
#   .gl/acdc/          an ACDC subset for the short real-data run: val/ whole, train/ the
#                      first $ACDC_TRAIN_PATIENTS patients of train_slices.list (the first 3
#                      are the labelled ones), an empty test list
#   .gl/admt/code/     the official AD-MT code (github.com/ZhenZHAO/AD-MT, the code/ folder of
#                      the mirror $ADMT_REPO, a bare git directory) that tools/bench_torch.py
#                      imports for the admt3d/admt2d rows (the machine has no network)
# Then, on the device: bash tools/gpu_session.sh   (carry: [".gl"]).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
N=${ACDC_TRAIN_PATIENTS:-24}
ADMT_REPO=${ADMT_REPO:-/work/.mirror/ZhenZHAO+AD-MT/repo}

cargo build --release --bin ssnet
mkdir -p .gl
cp "$SHARED"/device/debs/*.deb .gl/
cp "${CARGO_TARGET_DIR:-target}/release/ssnet" .gl/ssnet

src="$SHARED/data/acdc"
dst=.gl/acdc
rm -rf "$dst"
mkdir -p "$dst/splits" "$dst/train" "$dst/val" "$dst/test"
cp "$src"/val/*.nii.gz "$dst/val/"
cp "$src/splits/val.list" "$dst/splits/"
: > "$dst/splits/test.list"
# The first N patients in train_slices.list order, their cases and slices.
patients=$(sed 's/_frame.*//' "$src/splits/train_slices.list" | awk '!seen[$0]++' | head -n "$N")
for p in $patients; do
    cp "$src"/train/"$p"_frame*.nii.gz "$dst/train/"
done
grep -F -f <(printf '%s_\n' $patients) "$src/splits/train_slices.list" > "$dst/splits/train_slices.list"
grep -F -f <(printf '%s_\n' $patients) "$src/splits/train.list" > "$dst/splits/train.list"
rm -rf .gl/admt
mkdir -p .gl/admt
git --git-dir="$ADMT_REPO" archive HEAD code | tar -x -C .gl/admt
for f in networks/net_factory.py utils/losses.py dataloaders/mixaugs.py train_utils.py train_post_3d_aut.py train_post_2d_aut.py; do
    test -f ".gl/admt/code/$f" || { echo "stage_gpu.sh: $ADMT_REPO has no code/$f (set ADMT_REPO to the AD-MT mirror)" >&2; exit 1; }
done
echo "staged: the official AD-MT code at $(git --git-dir="$ADMT_REPO" rev-parse --short HEAD) in .gl/admt/code"
du -sh .gl
echo "staged: $(wc -l < "$dst/splits/train_slices.list") training slices of $N patients, $(wc -l < "$dst/splits/val.list") validation cases"
