# The README's two commands: `make demo` (set up + main job) and `make test` (set up + tests).
# Each creates .venv if missing and installs the project into it (torch pinned to the CPU wheel
# in requirements.txt; see README for CUDA).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Main job settings: `make demo DATASET=mnist DATA_DIR=../shared/data/mnist`. Without a network,
# SVHN cannot be downloaded and the demo says so and runs on the generated synth-digits instead.
DATASET ?= svhn
FALLBACK ?= synth-digits
DATA_DIR ?=
PRESET ?= fast  # not svhn-vae train's default `discrete`: that takes half an hour on SVHN here
RUN ?=
TRAIN_FLAGS ?=
EVAL_FLAGS ?= --importance-samples 100
DATA_FLAG := $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

demo: $(STAMP)
	@set -e; \
	dataset=$$($(BIN)/svhn-vae -q data ready --dataset $(DATASET) --fallback $(FALLBACK) $(DATA_FLAG)); \
	run=$(if $(RUN),$(RUN),runs/$(PRESET)-$$dataset); \
	echo "demo: preset $(PRESET) on $$dataset into $$run"; \
	$(BIN)/svhn-vae train --preset $(PRESET) --dataset $$dataset $(DATA_FLAG) --run-dir $$run --resume $(TRAIN_FLAGS); \
	$(BIN)/svhn-vae evaluate $$run $(DATA_FLAG) $(EVAL_FLAGS); \
	$(BIN)/svhn-vae report $$run $(DATA_FLAG); \
	echo "demo: $$dataset report in $$run/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
