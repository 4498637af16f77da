# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

MUTATION_STAMP := $(VENV)/.mutation-installed

.PHONY: setup system-deps test mutation demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

# Mutation score of the core packages (docs/testing.md); hours on 2 cores, never part of `make test`.
# One package: make mutation PACKAGES=metrics
$(MUTATION_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,mutation]'
	touch $(MUTATION_STAMP)

mutation: $(MUTATION_STAMP)
	$(BIN)/python scripts/mutation.py $(PACKAGES)

demo: $(STAMP)
	$(BIN)/python -m avseg.demo

clean:
	rm -rf runs/demo
