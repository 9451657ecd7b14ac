# Two commands a new user needs (README.md): `make demo` and `make test`.
# Each creates .venv and installs what it needs on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Strict editable mode: a link tree under build/ that mypy can see through (DESIGN.md §2).
# It must be refreshed when files are added, so `install` re-links on every run (~2 s).
INSTALL_FLAGS := --config-settings editable_mode=strict

.PHONY: demo test test-all lint typecheck proto install system-packages chaos bench bench-peers \
	profile clean base-image wheels image

$(BIN)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'setuptools>=77' wheel
	$(BIN)/pip install -q -e '.[test,dev,console]' $(INSTALL_FLAGS)
	touch $@

install: $(BIN)/.deps
	@$(BIN)/pip install -q --no-deps --no-build-isolation -e . $(INSTALL_FLAGS) \
		>$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }

demo: install
	$(BIN)/strom demo

# Debian packages some tests need (tests/system/packages.txt): installed when run as root with
# apt; otherwise the tests that need them skip, each kind with one line saying why.
system-packages:
	@tests/system/ensure.sh

# The test command CI runs: lint, types, stale generated code, then every non-slow test plus
# a bounded, seeded sample of the slow ones (tests/conftest.py).
test: install lint typecheck system-packages
	$(BIN)/python -m pytest -q --durations=25 --slow-sample=$${STROM_SLOW_SAMPLE:-4} $(PYTEST_ARGS)

test-all: install
	$(BIN)/python -m pytest -q --run-slow $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy -p strom

proto: install
	$(BIN)/python proto/generate.py

# A fault-injection run of any length (root: network namespaces): make chaos SEED=7 DURATION=300
# The run's folder (node logs, histories) is kept in .strom/chaos (pytest's own temporary
# folders are pruned by later runs); the test's timeout derives from DURATION.
chaos: install
	mkdir -p .strom
	STROM_CHAOS_SEED=$${SEED:-$$RANDOM} STROM_CHAOS_DURATION_S=$${DURATION:-300} \
		$(BIN)/python -m pytest -s -p no:cacheprovider --basetemp=.strom/chaos \
		tests/faults/test_chaos.py

bench: install
	$(BIN)/python bench/cluster_bench.py

# strom side by side with a file, raw gRPC, NATS JetStream and Redis Streams (bench/peers.py).
# Installs the `bench` extra and Debian's nats-server/redis-server (apt, as root) when missing;
# a peer that still cannot be installed is skipped. make bench-peers BENCH_ARGS='--runs 5'
bench-peers: install
	@$(BIN)/python -c 'import nats, redis' 2>/dev/null || \
		$(BIN)/pip install -q -e '.[bench]' $(INSTALL_FLAGS)
	@command -v nats-server >/dev/null && command -v redis-server >/dev/null || \
		{ apt-get update -q && apt-get install -y -q nats-server redis-server; } || \
		echo "could not install nats-server/redis-server: those peers will be skipped"
	$(BIN)/python bench/peers.py $(BENCH_ARGS)

# Flame graphs of node 1 and of the client under `strom perf produce` with the SDK's defaults
# (bench/flame.py; py-spy from PyPI, needs ptrace rights). make profile PROFILE_ARGS='--acks 1'
profile: install
	@test -x $(BIN)/py-spy || $(BIN)/pip install -q -e '.[profile]' $(INSTALL_FLAGS)
	$(BIN)/python bench/flame.py $(PROFILE_ARGS)

# The node image (deploy/Dockerfile). Its defaults are python:3.11-slim to run on and python:3.11
# (with a compiler) to build in; where the engine cannot pull, build local Debian bases first:
#   make base-image && make image STROM_BASE_IMAGE=strom-base:bookworm \
#       STROM_BUILD_IMAGE=strom-build:bookworm
STROM_BASE_IMAGE ?= python:3.11-slim
STROM_BUILD_IMAGE ?= python:3.11
STROM_IMAGE ?= strom:latest

base-image:
	deploy/base-image.sh strom-base:bookworm strom-build:bookworm

wheels: install
	deploy/wheels.sh $(BIN)/python

image: wheels
	docker build -f deploy/Dockerfile --build-arg BASE_IMAGE=$(STROM_BASE_IMAGE) \
		--build-arg BUILD_IMAGE=$(STROM_BUILD_IMAGE) -t $(STROM_IMAGE) .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
