#!/usr/bin/env bash
# GPU check of the Stable Diffusion attention source, for one run on a CUDA machine (H100/H200), from anywhere.
#
#   bash benchmarks/gpu_check.sh            # results: stdout, and $OUT (or benchmarks/results)/sd_image_gpu*.md
#
# Needs python3 with CUDA torch, diffusers, transformers, opencv-python-headless, safetensors, huggingface_hub.
# Installs nothing from the internet: if diffusers is missing and the repo has a .whl/ folder of wheels (made on a
# machine with internet, e.g. `pip download --no-deps --only-binary=:all: -d .whl diffusers==0.42.1`), they are
# installed from there into /tmp/site. Random full-size SD2 weights: timings/memory only, no quality claims.
#
# Steps: (1) correctness of the CUDA path on a tiny SD2-shaped model (fp16 and fp32 on cuda vs fp32 on cpu);
# (2) bench_image.py, cuda fp16, r=128, with balancing: per-image time and peak GPU memory against the targets
# (<= 0.5 s per image including balancing, <= 6 GB = 5.59 GiB peak), and the UNet pass with vs without the early
# stop after the last captured layer; (3) bench_click.py on cuda at r = 64 and 128 (chain on the GPU; upsampling, flood
# fill and scoring on the CPU); (4) bench_prepare.py on cuda: per-image stages after the attention (balancing, storage,
# slow-mode subspace, JBU operator). GrabCut for (3) and (4): $M2N2_DATASETS or ../shared/datasets (124080 suffices).
# Each step runs under its own time limit and a failing step does not stop the others; the exit status is the number
# of steps that failed or missed a target. Everything printed is also written to $RESULTS/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${OUT:-benchmarks/results}
export M2N2_DATASETS=${M2N2_DATASETS:-../shared/datasets} PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$RESULTS"
exec > >(tee "$RESULTS/gpu_check.log") 2>&1
failed=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, note a failure and go on
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "== $name"
  timeout "$limit" "$@" || failed+=("$name (exit $?)")
  echo "-- $name: $((SECONDS - start)) s"
}

if ! "$PY" -c "import diffusers" 2>/dev/null; then
  if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "diffusers is not installed and there is no .whl/ folder of wheels to install it from" >&2
    exit 2
  fi
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader || true
"$PY" - <<'PYEOF' || exit 2
import os, torch, diffusers, transformers
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
      f"{torch.cuda.get_device_name()}, {os.cpu_count()} CPUs")
PYEOF

step "1. CUDA correctness on a tiny SD2-shaped model" 90 "$PY" - <<'PYEOF'
import pathlib, sys, tempfile
import numpy as np, torch
sys.path.insert(0, ".")
from tests.sd_fixtures import make_tiny_sd2
from m2n2_core.config import M2N2Config
from m2n2_core.attention.sd import StableDiffusionAttention

model = make_tiny_sd2(pathlib.Path(tempfile.mkdtemp()) / "sd", r=16)
image = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
def attention(device, dtype):
    config = M2N2Config(model=str(model), attention_resolution=16, dtype=dtype)
    return StableDiffusionAttention(config, device).compute(image)
fp16, fp32, cpu = attention("cuda", None), attention("cuda", "float32"), attention("cpu", None)
assert fp16.dtype == torch.float32 and fp16.device.type == "cuda" and fp16.shape == (256, 256)
assert torch.allclose(fp16.sum(1), torch.ones(256, device="cuda"), atol=1e-5)
fp32_err = (fp32.cpu() - cpu).abs().max().item()
fp16_err = (fp16 - fp32).abs().max().item() / fp32.abs().max().item()
print(f"cuda fp32 vs cpu fp32 max abs diff {fp32_err:.2e}; cuda fp16 vs fp32 max rel diff {fp16_err:.2e}")
assert fp32_err < 1e-4 and fp16_err < 5e-2, "CUDA results disagree with the CPU reference"
print("PASS")
PYEOF

step "2. full-size SD2 (random weights), cuda fp16, r=128, with balancing" 150 \
  "$PY" benchmarks/bench_image.py --device cuda --dtype float16 --resolution 128 --warmup 2 --repeats 5 \
  --compare-early-stop --target-seconds 0.5 --target-gib 5.59 --out "$RESULTS/sd_image_gpu.md"

if [ -d "$M2N2_DATASETS/GrabCut" ]; then
  step "3. per click on the GPU: exact vs fast, r=64 and 128, 854x480, clicks 1/5/10 (SD-like attention)" 200 \
    "$PY" benchmarks/bench_click.py --device cuda --attention sd-like --resolutions 64 128 \
    --out "$RESULTS/click_gpu.md"
  step "4. per image after the attention on the GPU: balancing, storage, subspace, JBU operator" 90 \
    "$PY" benchmarks/bench_prepare.py --device cuda --attention sd-like --resolutions 64 128 \
    --out "$RESULTS/prepare_gpu.md"
else
  failed+=("3 and 4: GrabCut not found at $M2N2_DATASETS/GrabCut")
fi

echo "== summary: ${#failed[@]} step(s) failed or missed a target"
for f in "${failed[@]}"; do echo "   $f"; done
exit "${#failed[@]}"
