# NotNets emulator. Two commands for a new user: `make demo` and `make test`.
# Every target depends on `setup`, which installs what is missing and is idempotent.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
EMU   := $(VENV)/bin/notnets-emu
PYTEST_ARGS ?=

.PHONY: setup test unit e2e demo bench doctor clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

e2e: setup
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

demo: setup
	@bash scripts/demo.sh

bench: setup
	$(EMU) bench --backend sim --quick --out bench-out

doctor: setup
	$(EMU) doctor

clean:
	-$(EMU) down 2>/dev/null || true
	rm -rf .notnets .pytest_cache .hypothesis bench-out
