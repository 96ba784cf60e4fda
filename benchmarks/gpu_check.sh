#!/usr/bin/env bash
# One short, prepared GPU session (the device machine lends ~15 minutes): correctness on CUDA, then the
# benchmarks whose GPU rows docs/benchmarks.md lacks. Run it on the device machine from the repo root:
#
#   here, once:  echo /.whl/ >> .git/info/exclude
#                python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#                  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#                  -d .whl diffusers==0.42.1 open_clip_torch==3.3.0 clean-fid==0.1.35 ftfy wcwidth importlib_metadata lpips==0.1.4
#   device run:  carry [".whl"], command: bash benchmarks/gpu_check.sh   (timeout ~540 s)
#
# Writes every result under $OUT (or ./gpu_results) for docs/benchmarks.md.
set -uo pipefail
OUT="${OUT:-gpu_results}"; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PWD" || exit 1
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"

# 1. The paper configuration: SD-1.x + CLIP-L + StyleGAN2-1024, both engines, fp32/bf16, batches 1/2/4.
timeout 300 python3 benchmarks/sds_step.py --config full --device cuda --batches 1,2,4 2>&1 | tee "$OUT/sds_step_full.md"
# 1b. The cost model's predictions (trainables/cost) next to real steps and max_memory_allocated.
timeout 240 python3 benchmarks/cost_vs_measured.py --device cuda --gpu H200 --steps 10 2>&1 | tee "$OUT/cost_vs_measured.md"
# 2. StyleGAN2-1024 render and EG3D ffhq512-128 render + forward/backward on CUDA.
timeout 90 python3 benchmarks/stylegan2_render.py 2>&1 | tee "$OUT/stylegan2_render.md"
timeout 120 python3 benchmarks/eg3d_render.py 2>&1 | tee "$OUT/eg3d_render.md"
