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

# The suite in parallel (pytest-xdist): one process per core, one thread each (OpenMP threads of
# several processes on 2 cores only get in each other's way); whole files stay on one worker, so
# their module fixtures are built once. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= auto
test: $(STAMP) system-deps
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

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
