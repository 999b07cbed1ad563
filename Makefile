# The two commands that set everything up on a fresh machine: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit bench lint clean

install: $(STAMP)
	@# Byte-code now: PYTHONDONTWRITEBYTECODE may be set, and compiling the
	@# sources at every start would cost ketch-runc tens of milliseconds.
	@$(BIN)/python -m compileall -q src
	@# The CLI's scripts start Python without `site` (2.5 ms of every command).
	@$(BIN)/python scripts/write-launchers

$(STAMP): pyproject.toml scripts/install-system-packages
	sh scripts/install-system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# The main job: the compose application (an API, PostgreSQL, Redis; all built from
# debian:bookworm, or the busybox variant without a Debian mirror: KETCH_DEMO_COMPOSE=busybox),
# then a tour of the engine underneath (runtime, images, containers, networks, builds).
demo: install
	$(BIN)/python -m ketch.demo_compose
	$(BIN)/python -m ketch.demo

# The whole suite: unit tests, then the integration tests that need root.
# pytest's exit 5 ("no tests ran") is a failure, as any other non-zero exit.
test: install
	$(BIN)/python -m pytest -q tests

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

bench: install
	$(BIN)/python bench/runtime.py
	$(BIN)/python bench/images.py
	$(BIN)/python bench/containers.py
	$(BIN)/python bench/network.py
	$(BIN)/python bench/registry.py
	$(BIN)/python bench/build.py
	$(BIN)/python bench/compose.py

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
