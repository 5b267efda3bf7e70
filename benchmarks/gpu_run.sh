#!/usr/bin/env bash
# The one prepared run for a lent GPU machine: every command that takes --device, on the GPU, and
# the GPU figures benchmarks/RESULTS.md keeps (training steps per second at 1 and 16 tasks per
# step, importance-sampled NLL images per second), into $OUT (8 files at most come back).
#
#   bash benchmarks/gpu_run.sh pack   here: the Pyro wheels, gzipped MNIST and Omniglot's zips
#                                     into .gpu/ (git-ignored), since ../shared does not travel
#   bash benchmarks/gpu_run.sh        there, with carry [".gpu"] (../shared/notes/gpu.md)
#
# A dry run here, on the CPU with tiny settings (a few minutes):
#   PYTHON=.venv/bin/python DEVICE=cpu QUICK=1 OUT=/tmp/gpu-dry bash benchmarks/gpu_run.sh
#
# A lent machine is held for minutes, so a command that fails is logged and the rest still run;
# the script exits non-zero at the end, naming the commands that failed.
#
# What it leaves in $OUT: log.txt (every command and its output), step_time.json, nll_time.json,
# theta_time.json (θ(u) for one task of 5 images, layer by layer against the batched products and
# torch.compile: on the CPU the batched form saved 0.1–1.7 ms, not worth its code; the GPU's count of
# kernels is what it would cut),
# the ROC curve and BO trace PNGs, fewshot.json (the few-shot curve of one run, scored on the GPU
# and on the CPU), and RESULTS-gpu.md: training steps / s and NLL images / s, then
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
    # Fashion-MNIST stays behind: with it the tree would pass the 64 MiB a call carries.
    mkdir -p .gpu/data/MNIST .gpu/data/omniglot-py
    for f in "$SHARED/data/MNIST/raw/"*-ubyte; do gzip -c "$f" > ".gpu/data/MNIST/$(basename "$f").gz"; done
    cp "$SHARED"/data/omniglot-py/*.zip .gpu/data/omniglot-py/
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
    mkdir -p /tmp/gpu-data/MNIST/raw
    for f in .gpu/data/MNIST/*.gz; do gunzip -c "$f" > "/tmp/gpu-data/MNIST/raw/$(basename "$f" .gz)"; done
    cp -r .gpu/data/omniglot-py /tmp/gpu-data/
    export PYROHVAE_DATA_DIR=/tmp/gpu-data
fi

if [ -n "$QUICK" ]; then
    STEPS=4; EVAL=20; OUTLIERS=40; BO=12; FEW=(--per-task 1 --samples 4); QUICK_FLAG=(--quick)
    THETA=(--repeats 3)
else
    STEPS=500; EVAL=2000; OUTLIERS=2000; BO=40; FEW=(--per-task 1 --samples 128); QUICK_FLAG=()
    THETA=()
fi
RUN=/tmp/gpu-run
FAILED=()

log() {  # a command and its output into the log; one that fails is named at the end, the rest run
    echo "\$ $*" | tee -a "$LOG"
    local start=$SECONDS
    if "$@" 2>&1 | tee -a "$LOG"; then
        echo "(ok, $((SECONDS - start)) s)" | tee -a "$LOG"
    else
        echo "(FAILED, $((SECONDS - start)) s)" | tee -a "$LOG"
        FAILED+=("$*")
    fi
}

{ date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; "$PYTHON" -c "import torch; print('torch', torch.__version__)"; } \
    | tee "$LOG"

bench() {  # a benchmark's JSON into $OUT/FILE and the log; one that fails is named at the end
    local file=$1
    shift
    echo "\$ $* > $file" | tee -a "$LOG"
    if "$@" > "$OUT/$file" 2>> "$LOG"; then cat "$OUT/$file" >> "$LOG"; else FAILED+=("$*"); fi
}
bench step_time.json "$PYTHON" benchmarks/step_time.py --device "$DEVICE" --batch-sizes 5 20 100 --profile \
    "${QUICK_FLAG[@]}" --json
# --quick here too: the loop over pyro.infer.Importance, one draw at a time, takes minutes of the
# lease for a figure the CPU already gives; the vectorized rate is read from 50 images.
bench nll_time.json "$PYTHON" benchmarks/nll_time.py --device "$DEVICE" --quick --json
bench theta_time.json "$PYTHON" benchmarks/theta_time.py --device "$DEVICE" --items 5 "${THETA[@]}" --json

rm -rf "$RUN" "$RUN-10" "$RUN-shots" /tmp/gpu-discover /tmp/gpu-fewshot-*
log "$PYTHON" cli.py train --dataset mnist --device "$DEVICE" --steps "$STEPS" --out "$RUN" --no-progress
log "$PYTHON" cli.py train --dataset mnist --device "$DEVICE" --steps "$STEPS" --tasks-per-step 10 \
    --out "$RUN-10" --no-progress
log "$PYTHON" cli.py evaluate "$RUN" --device "$DEVICE" --limit "$EVAL" --no-progress
log "$PYTHON" cli.py outliers "$RUN" --device "$DEVICE" --outliers omniglot --limit "$OUTLIERS" \
    --plot "$OUT/roc.png" --no-progress
log "$PYTHON" cli.py discover "$RUN" --device "$DEVICE" --target-class 3 --iterations "$BO" \
    --out /tmp/gpu-discover --no-progress
[ -f /tmp/gpu-discover/trace.png ] && cp /tmp/gpu-discover/trace.png "$OUT/bo_trace.png"
# The few-shot models: the warped address at half its steps of no shot (experiments/fewshot.py's
# noshot50), trained on the GPU, its curve on the unseen characters scored on the GPU and on the CPU.
log "$PYTHON" cli.py train --dataset omniglot --split background --task-by character --batch-size 20 \
    --tasks-per-step 16 --split-context --guide precision-pool --z-prior shots-k --z-dim 32 \
    --shot-template warp-address --no-shot-share 0.5 --kl-z-start 1 --kl-z-anneal 0 \
    --device "$DEVICE" --steps "$STEPS" --out "$RUN-shots" --no-progress
for where in "$DEVICE" cpu; do
    log "$PYTHON" cli.py fewshot-curve "$RUN-shots" --shots 0,1,4,9 "${FEW[@]}" --device "$where" \
        --out "/tmp/gpu-fewshot-$where" --no-progress
done
"$PYTHON" - "$OUT" "$RUN-shots" "$DEVICE" <<'EOF' || FAILED+=("fewshot.json")
import json, sys
from pathlib import Path

out, run, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
curves = {w: json.loads(Path(f"/tmp/gpu-fewshot-{w}/curve.json").read_text()) for w in (device, "cpu")}
summary = {"steps": metrics[-1]["step"], "train_seconds": metrics[-1]["seconds"], "curves": curves}
(out / "fewshot.json").write_text(json.dumps(summary, indent=2) + "\n")
EOF

"$PYTHON" - "$OUT" > "$OUT/RESULTS-gpu.md" <<'EOF' || FAILED+=("RESULTS-gpu.md")
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
theta = json.loads((out / "theta_time.json").read_text())
for b, row in theta["items"].items():
    print()
    print(f"θ(u) of one task of {b} images, forward and backward, ms (ratio to layer by layer): " + ", ".join(
        f"{name} {ms:.2f} ({row['ratio'][name]:.2f}x)" for name, ms in row["ms"].items()))
EOF
cat "$OUT/RESULTS-gpu.md"
if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'failed: %s\n' "${FAILED[@]}" | tee -a "$LOG"
    exit 1
fi
