#!/usr/bin/env bash
# The GPU checks of issue 12, as one command for a machine with a CUDA GPU (none in CI):
#   1. tests/scoring/test_cuda.py: float32 on the GPU equals the CPU (padded and packed), bf16 through the store
#      with the budget from free memory, a real out-of-memory batch split and retried, Ray with a GPU per model;
#   2. benchmarks/bench_gpu.py: texts/s, tokens/s and MFU of HF padded, HF packed and vLLM (where installed)
#      against the authors' one-text method, on Qwen2-1.5B- and Llama-3-8B-shaped models with random weights.
# Needs torch with CUDA, transformers, tokenizers, numpy, pandas, pyarrow and pytest; lmmap is taken from this
# checkout (no install). Logs go to $OUT (default ./gpu-check). At most 150 s of tests and BENCH_SECONDS (300) + 90 s
# of benchmark: under 9 minutes, inside one 10-minute device command.
#
#   bash scripts/gpu-check.sh                      # everything, the benchmark in 300 s
#   BENCH_SECONDS=200 bash scripts/gpu-check.sh    # a shorter benchmark
set -o pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
py="${PYTHON:-python3}"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  "$py" -c "import torch, transformers; print('torch', torch.__version__, '| cuda', torch.version.cuda, '| transformers', transformers.__version__, '| gpu visible', torch.cuda.is_available())"
} 2>&1 | tee "$out/env.txt"
timeout 150 "$py" -m pytest tests/scoring/test_cuda.py -q -rs -p no:cacheprovider 2>&1 | tee "$out/cuda-tests.log"
tests=$?
timeout $(( ${BENCH_SECONDS:-300} + 90 )) "$py" benchmarks/bench_gpu.py --time-budget "${BENCH_SECONDS:-300}" \
  2>&1 | tee "$out/bench_gpu.log"
bench=$?
echo "gpu-check: tests exit $tests, benchmark exit $bench; logs in $out/"
exit $(( tests || bench ))
