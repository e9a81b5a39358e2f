# Two entry points a newcomer needs: `make demo` and `make test`.
# Both build .venv from nothing but python3, and reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[report]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,report]'
	touch $(VENV)/.installed-base $@

demo: $(VENV)/.installed-base
	$(BIN)/ubench run --model random --dataset sample --output results/demo --force

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) results/demo
