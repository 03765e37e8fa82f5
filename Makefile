# The two set-up commands of a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test venv system bench fixtures

$(BIN)/corepy: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/corepy

# System side of the tests: oracles (clang-19, bpftool, libbpf) and bpffs/tracefs mounts.
system:
	sh scripts/setup-system.sh

run: venv system
	$(BIN)/python -m corepy.examples.bootstrap

test: venv system
	$(BIN)/python -m pytest -q

bench: venv system
	sh scripts/setup-bench.sh
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

fixtures: system
	sh fixtures/build.sh
