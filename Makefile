# Two commands: `make run` (serve on embedded defaults) and `make test` (install what is needed, run everything).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
export INTAKE_VAR_DIR ?= var
# The Debian sid root of the test PBX takes minutes to build: as root it is kept machine-wide, so every
# checkout of the project (and CI on a clean clone) reuses it instead of debootstrapping again.
ifeq ($(shell id -u),0)
export INTAKE_TEST_PBX_DIR ?= /var/cache/city-intake/asterisk
endif

.PHONY: install migrate model run test lint typecheck system-deps services bench clean

install: $(STAMP) migrate model

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

migrate: $(STAMP)
	mkdir -p $(INTAKE_VAR_DIR)
	$(BIN)/intake db upgrade
	$(BIN)/intake admin bootstrap

# The shipped classifier is trained once from the data in the package (deterministic, ~30 s) and cached
# under var/models; later runs find it and return at once.
model: $(STAMP)
	$(BIN)/intake classifier build

run: install
	$(BIN)/intake serve --host 127.0.0.1 --port 8000

system-deps:
	scripts/system-deps.sh

services: system-deps
	scripts/services.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) services lint
	INTAKE_TEST_REQUIRE_SERVICES=1 $(BIN)/pytest -q -p no:cacheprovider

BENCHES := $(sort $(wildcard bench/bench_*.py))

bench: $(STAMP) services
	set -e; for b in $(BENCHES); do echo "== $$b"; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) var build *.egg-info
