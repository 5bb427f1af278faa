PY := .venv/bin/python
# fairseq's CLIs must never pick up a GPU-less CUDA probe or a user's site-packages.
export PYTHONNOUSERSITE := 1

.PHONY: setup test test-fast demo bench clean

setup:
	@bash scripts/setup_env.sh

# Two workers for the two cores of the reference machine; tests that share a costly fixture stay together.
TEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup tests

# Everything but the end-to-end runs of the real CLIs (seconds instead of minutes).
test-fast: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not e2e" tests

demo: setup
	bash recipes/multi30k_en_fr/run.sh

clean:
	rm -rf runs build .pytest_cache .hypothesis
