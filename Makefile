# Every target creates the virtual environment it needs when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast bench typecheck clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)  ## start the demo consortium of ring.toml; Ctrl-C stops it
	$(BIN)/consortium up -c ring.toml

test: $(STAMP)  ## the whole suite, as CI runs it
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## everything but the real-process and browser tests
	$(BIN)/python -m pytest -q -m 'not processes and not browser'

typecheck: $(STAMP)
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
