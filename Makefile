# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
STAMP := .make/installed

.PHONY: install demo test bench

# torch is pinned to the CPU build first so that the `models` extra does not pull a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[models,test]'
	@mkdir -p .make && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m lmmap demo -o lmmap-demo

test: $(STAMP)
	$(PYTHON) -m pytest -n 2 --dist loadgroup -q

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done
