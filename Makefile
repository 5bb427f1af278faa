PY := .venv/bin/python
# fairseq's CLIs must never pick up a GPU-less CUDA probe or a user's site-packages.
export PYTHONNOUSERSITE := 1

.PHONY: setup test test-fast demo bench clean

setup:
	@bash scripts/setup_env.sh

# Two workers for the two cores of the reference machine; tests that share a costly fixture stay together
# (loadgroup), and the groups start in the order tests/conftest.py sorts them (xdist would reorder them by size).
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

test: setup
	$(PY) -m pytest $(XDIST) tests

# Everything but the end-to-end runs of the real CLIs (seconds instead of minutes).
test-fast: setup
	$(PY) -m pytest $(XDIST) -m "not e2e" tests

demo: setup
	bash recipes/multi30k_en_fr/run.sh

clean:
	rm -rf runs build .pytest_cache .hypothesis
