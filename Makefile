PY := .venv/bin/python
# fairseq's CLIs must never pick up a GPU-less CUDA probe or a user's site-packages.
export PYTHONNOUSERSITE := 1

.PHONY: setup test test-fast demo bench clean

setup:
	@bash scripts/setup_env.sh

test: setup
	$(PY) -m pytest tests

# Everything but the end-to-end runs of the real CLIs (seconds instead of minutes).
test-fast: setup
	$(PY) -m pytest -m "not e2e" tests

demo: setup
	bash recipes/multi30k_en_fr/run.sh

clean:
	rm -rf runs build .pytest_cache .hypothesis
