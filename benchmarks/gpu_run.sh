#!/usr/bin/env bash
# The one prepared run for a lent GPU machine: every command that takes --device, on the GPU, and
# the GPU figures benchmarks/RESULTS.md keeps (training steps per second at 1 and 16 tasks per
# step, importance-sampled NLL images per second), into $OUT (8 files at most come back).
#
#   bash benchmarks/gpu_run.sh pack   here: the Pyro wheels and gzipped MNIST and Fashion-MNIST
#                                     into .gpu/ (git-ignored), since ../shared does not travel
#   bash benchmarks/gpu_run.sh        there, with carry [".gpu"] (../shared/notes/gpu.md)
#
# A dry run here, on the CPU with tiny settings (a few minutes):
#   DEVICE=cpu QUICK=1 OUT=/tmp/gpu-dry bash benchmarks/gpu_run.sh
#
# What it leaves in $OUT: log.txt (every command and its output), step_time.json, nll_time.json,
# the ROC curve and BO trace PNGs, and RESULTS-gpu.md: training steps / s and NLL images / s, then
# the fixed cost of a step at 5, 20 and 100 images (ratio to the plain step and ms beyond it for
# vae, hypervae, hypervae4, hypervae16, task4, hypervae-made (every weight of θ(u) made), vae-jit,
# hypervae-jit and task4-jit (--elbo jit)) and the phases of each step. What to read in it: the ms beyond the
# plain step at 5 images, which on a GPU is most of the step (on 2 CPU cores about 2.7 ms for the
# VAE and 9 ms for HyperVAE, 1 task, 5 ms with --elbo jit), and how much of it --elbo jit takes away
# there. No CUDA-graph candidate: a graph cannot capture a step whose ELBO reads the loss on the
# host, as Pyro's do on every call (benchmarks/RESULTS.md).
set -euo pipefail

if [ "${1:-}" = pack ]; then
    SHARED=${SHARED:-../shared}
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
    rm -rf .gpu && mkdir -p .gpu/wheels
    cp "$SHARED"/wheels/*.whl .gpu/wheels/
    for dataset in MNIST FashionMNIST; do
        mkdir -p ".gpu/data/$dataset"
        for f in "$SHARED/data/$dataset/raw/"*-ubyte; do gzip -c "$f" > ".gpu/data/$dataset/$(basename "$f").gz"; done
    done
    du -sh .gpu
    exit 0
fi

DEVICE=${DEVICE:-cuda}
OUT=${OUT:-gpu-out}
QUICK=${QUICK:-}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
LOG="$OUT/log.txt"

if ! "$PYTHON" -c "import pyro" 2>/dev/null; then  # the GPU image has torch but not Pyro
    "$PYTHON" -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
if [ -d .gpu/data ]; then
    for dir in .gpu/data/*/; do
        dataset=$(basename "$dir")
        mkdir -p "/tmp/gpu-data/$dataset/raw"
        for f in "$dir"*.gz; do gunzip -c "$f" > "/tmp/gpu-data/$dataset/raw/$(basename "$f" .gz)"; done
    done
    export PYROHVAE_DATA_DIR=/tmp/gpu-data
fi

if [ -n "$QUICK" ]; then
    STEPS=4; EVAL=20; OUTLIERS=40; BO=12; QUICK_FLAG=(--quick)
else
    STEPS=500; EVAL=2000; OUTLIERS=2000; BO=100; QUICK_FLAG=()
fi
RUN=/tmp/gpu-run

log() {  # a command and its output into the log; the script stops at the first that fails
    echo "\$ $*" | tee -a "$LOG"
    "$@" 2>&1 | tee -a "$LOG"
}

{ date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; "$PYTHON" -c "import torch; print('torch', torch.__version__)"; } \
    | tee "$LOG"

"$PYTHON" benchmarks/step_time.py --device "$DEVICE" --batch-sizes 5 20 100 --profile "${QUICK_FLAG[@]}" \
    --json > "$OUT/step_time.json"
"$PYTHON" benchmarks/nll_time.py --device "$DEVICE" "${QUICK_FLAG[@]}" --json > "$OUT/nll_time.json"
cat "$OUT/step_time.json" "$OUT/nll_time.json" >> "$LOG"

rm -rf "$RUN" "$RUN-10" /tmp/gpu-discover
log "$PYTHON" cli.py train --dataset mnist --device "$DEVICE" --steps "$STEPS" --out "$RUN" --no-progress
log "$PYTHON" cli.py train --dataset mnist --device "$DEVICE" --steps "$STEPS" --tasks-per-step 10 \
    --out "$RUN-10" --no-progress
log "$PYTHON" cli.py evaluate "$RUN" --device "$DEVICE" --limit "$EVAL" --no-progress
log "$PYTHON" cli.py outliers "$RUN" --device "$DEVICE" --outliers fashion-mnist --limit "$OUTLIERS" \
    --plot "$OUT/roc.png" --no-progress
log "$PYTHON" cli.py discover "$RUN" --device "$DEVICE" --target-class 3 --iterations "$BO" \
    --out /tmp/gpu-discover --no-progress
cp /tmp/gpu-discover/trace.png "$OUT/bo_trace.png"

"$PYTHON" - "$OUT" <<'EOF' | tee "$OUT/RESULTS-gpu.md"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
step = json.loads((out / "step_time.json").read_text())
nll = json.loads((out / "nll_time.json").read_text())
per_s = step["steps_per_s"]
print(f"GPU figures ({step['device']}; {step['machine']}):")
print()
print("| | figure |")
print("| --- | ---: |")
print(f"| HyperVAE training steps / s, 1 task of 100 | {per_s['hypervae']:.1f} |")
print(f"| HyperVAE training steps / s, 16 tasks of 100 | {per_s['hypervae16']:.1f} |")
print(f"| plain PyTorch VAE steps / s, 100 images | {per_s['plain']:.1f} |")
print(f"| HyperVAE step / plain VAE step; at 16 tasks, per 100 images | {step['hypervae_ratio']:.2f}; "
      f"{step['hypervae16_per_item_ratio']:.2f} |")
print(f"| NLL images / s at K = {nll['samples']}, vectorized | {nll['vectorized_images_per_s']:.1f} |")
print(f"| NLL images / s, loop over pyro.infer.Importance | {nll['importance_loop_images_per_s']:.2f} |")
print(f"| full MNIST test set at K = {nll['samples']}, vectorized | {nll['mnist_test_minutes_vectorized']:.1f} min |")
print()
print("The fixed cost of a step: ratio to the plain VAE's step of as many images, and the ms beyond it")
print("(several tasks: per task's images). Targets: HyperVAE ≤ 1.5x, VAE ≤ 1.15x, task-specific ≤ 1.1x.")
print()
sizes = step["batch_sizes"]
print("| images a step (a task) | " + " | ".join(sizes) + " |")
print("| --- | " + " | ".join("---:" for _ in sizes) + " |")
print("| plain PyTorch VAE, ms | " + " | ".join(f"{sizes[b]['ms']['plain']:.2f}" for b in sizes) + " |")
for name in ("vae", "hypervae", "hypervae4", "hypervae16", "task4", "hypervae-made", "vae-jit", "hypervae-jit", "task4-jit"):
    cells = [f"{sizes[b]['ratio'][name]:.2f}x ({sizes[b]['extra_ms'][name]:+.2f} ms)" for b in sizes]
    print(f"| {name} | " + " | ".join(cells) + " |")
for b, phases in step["profile"].items():
    print()
    print(f"Phases of a step of {b} images, ms: " + "; ".join(
        f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in phases[name].items()) for name in phases))
EOF
