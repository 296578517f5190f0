# ctxlm: `make demo` and `make test` each install into .venv when needed, then run.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo lint test test-fast java clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(shell command -v $(PYTHON) || echo python3) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,all]'
	@touch $(STAMP)

install: $(STAMP)

# pycocoevalcap's METEOR (question generation metrics) runs on Java.
java:
	@command -v java >/dev/null 2>&1 || { \
	  echo "installing a Java runtime for METEOR (pycocoevalcap)"; \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null; \
	  else echo "warning: no java and cannot install one; METEOR tests will be skipped"; fi; }

demo: install
	$(BIN)/python -m ctxlm.demo

# ruff's lint rules and line length are in pyproject.toml ([tool.ruff]).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install java
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf demo-out .pytest_cache
