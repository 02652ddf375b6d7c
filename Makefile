# The README's two commands: `make demo` (set up + main job) and `make test` (set up + the docs
# built in strict mode + tests). Each creates .venv if missing and installs the project into it
# (torch pinned to the CPU wheel in requirements.txt; see docs/getting-started.md for CUDA).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Main job settings: `make demo DATASET=mnist DATA_DIR=../shared/data/mnist`. Without a network,
# SVHN cannot be downloaded and the demo says so and runs on the generated synth-digits instead.
DATASET ?= svhn
FALLBACK ?= synth-digits
DATA_DIR ?=
# The preset is not svhn-vae train's default `discrete`: that takes half an hour on SVHN here.
# (No comment after a value: make would keep the spaces before it in the value.)
PRESET ?= fast
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
	dataset=$$($(BIN)/svhn-vae -q data ready --dataset "$(DATASET)" --fallback $(FALLBACK) $(DATA_FLAG)); \
	run="$(if $(RUN),$(RUN),runs/$(PRESET)-$$(basename "$$dataset"))"; \
	echo "demo: preset $(PRESET) on $$dataset into $$run"; \
	$(BIN)/svhn-vae train --preset $(PRESET) --dataset "$$dataset" $(DATA_FLAG) --run-dir "$$run" --resume $(TRAIN_FLAGS); \
	$(BIN)/svhn-vae evaluate "$$run" $(DATA_FLAG) $(EVAL_FLAGS); \
	$(BIN)/svhn-vae report "$$run" $(DATA_FLAG); \
	echo "demo: $$dataset report in $$run/report.html"

# The documentation site (mkdocs.yml) into build/site: strict, so a broken link, a missing anchor or
# an API entry that does not load fails the target. Not --quiet: it would hide the warnings that
# strict mode counts. NO_MKDOCS_2_WARNING silences Material's notice about MkDocs 2.
test: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
