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
# stop after the last captured layer; (3) bench_click.py on cuda (chain on the GPU; upsampling, flood fill and scoring on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"

if ! "$PY" -c "import diffusers" 2>/dev/null; then
  if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "diffusers is not installed and there is no .whl/ folder of wheels to install it from" >&2
    exit 2
  fi
fi
"$PY" - <<'EOF'
import torch, diffusers, transformers
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
      f"{torch.cuda.get_device_name()}")
EOF

echo "== 1. CUDA correctness on a tiny SD2-shaped model"
"$PY" - <<'EOF'
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
EOF

echo "== 2. full-size SD2 (random weights), cuda fp16, r=128, with balancing"
"$PY" benchmarks/bench_image.py --device cuda --dtype float16 --resolution 128 --warmup 2 --repeats 5 \
  --compare-early-stop --target-seconds 0.5 --target-gib 5.59 --out "$RESULTS/sd_image_gpu.md"

echo "== 3. per click on the GPU: exact vs fast, r=128, 854×480, clicks 1/5/10 (synthetic SD-like attention)"
if [ -d ../shared/datasets/GrabCut ]; then
  "$PY" benchmarks/bench_click.py --device cuda --attention sd-like --resolutions 128 --out "$RESULTS/click_gpu.md"
else
  echo "GrabCut not found beside the repo: per-click GPU timing skipped"
fi
