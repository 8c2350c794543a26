# One-command entry points. Every target depends on `install`, so a fresh clone needs
# nothing but python3 (3.10+) with venv: `make test` and `make book` set everything up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint format clean help tiny-model book notebooks run reset browser bench sweep pdf
# A bare `make` prints the targets; it never starts an install (rules below come before help).
.DEFAULT_GOAL := help

# `make book` builds the full study by default; PROFILE=smoke is the offline build.
PROFILE ?= full
# PROFILE must name a file in profiles/, checked here before any shell sees it. Values a
# user types (NB, ARGS, DATA, MODEL, SWEEP, WORKERS, LAUNCHER, CLUSTER) reach commands only
# through the environment, quoted ("$$NB"), never pasted into a shell line, and vptlib
# validates them.
PROFILES := $(basename $(notdir $(wildcard profiles/*.yaml)))
ifneq ($(words $(PROFILE))$(findstring %,$(PROFILE)),1)
$(error PROFILE must be one profile name; choose one of: $(PROFILES))
endif
ifeq ($(filter $(PROFILE),$(PROFILES)),)
$(error PROFILE=$(PROFILE) is not in profiles/; choose one of: $(PROFILES))
endif
export PROFILE NB ARGS DATA MODEL SWEEP WORKERS LAUNCHER CLUSTER
# BACKBONES="name=folder,...": local folders for the profile's backbones (its `backbones:`), as
# MODEL= is for its main model; vptlib.study.profile reads it.
export VPTLIB_BACKBONES := $(BACKBONES)
# JOBS: pages executed at once. A page's fixed cost (a kernel, its imports) is single-threaded
# Python, so two at a time nearly halve a smoke build on two cores; pages that share runs
# wait for each other (the rules below), and every shared file is written atomically or
# under a lock. JOBS=1 executes them one by one. Each vptlib process sizes its torch threads
# (OMP_NUM_THREADS, unless you set it) to its share of the cores and to those idle as it
# starts, and waiting threads sleep instead of spinning (vptlib.threads): with two pages each
# threading over both cores, a tiny model's training step took 2.8 s instead of some 0.03 s,
# measured on two cores.
JOBS ?= 2
export OMP_WAIT_POLICY ?= PASSIVE
# DRY_RUN=1: every run cut to one epoch, one seed and the first grid point, under
# runs/<profile>-dry-run/, every page marked (vptlib.study.profile.dry_run). vptlib reads it as:
export VPTLIB_DRY_RUN := $(DRY_RUN)
# TIMEOUT=<seconds>: the most one notebook cell may run (vptlib.switches.cell_timeout; 0: none).
export VPTLIB_CELL_TIMEOUT := $(TIMEOUT)
PROFILE_FILE := profiles/$(PROFILE).yaml
GEN := book/generated
# The methods, in the registry's order (vptlib.methods.METHODS), asked of vptlib by the
# targets that need them; regenerated when the registry changes. A new method needs no
# line here.
METHODS_MK := _build/methods.mk
# Each page's own vptlib files (PAGE_SRC_<template>), read from the template's calls and the
# imports they reach (vptlib.study.page_sources): a report module's edit re-executes the
# pages that use it, not all of them. Regenerated when a template or vptlib's code changes.
PAGES_MK := _build/pages.mk
TEMPLATES := $(wildcard notebooks/*.ipynb)
ifneq ($(filter book notebooks run $(GEN)/%,$(MAKECMDGOALS)),)
-include $(METHODS_MK) $(PAGES_MK)
endif
$(PAGES_MK): $(TEMPLATES) $(wildcard vptlib/*.py vptlib/*/*.py) $(STAMP)
	@mkdir -p $(dir $@)
	@$(PY) -m vptlib.study.page_sources $@ $(TEMPLATES)
$(METHODS_MK): vptlib/methods/__init__.py vptlib/cli/run_flags.json $(STAMP)
	@mkdir -p $(dir $@)
	$(PY) -m vptlib.cli.run_flags --make > $@.tmp && mv $@.tmp $@
EXPERIMENTS = $(METHODS:%=$(GEN)/experiments/%.ipynb)
# What a page is made by. RUN_SRC is the code that decides a run's numbers, exactly the
# files of a run's code hash (vptlib.runs.provenance.identity_files; a test keeps the two
# equal): editing it makes every run new, and re-executes every page that trains. Beside it
# each page depends on its own files (PAGE_SRC_<template>, above): editing them re-executes
# that page, which reuses every finished run (same code hash), so a figure's colour
# retrains nothing. bench/ and cli/ re-execute nothing.
RUN_SRC := vptlib/selection.py $(wildcard vptlib/data/*.py vptlib/models/*.py vptlib/methods/*.py vptlib/runs/*.py)
# The profile's data folder, as vptlib reads the profile (empty before `make install`; the
# targets that need it run in a sub-make after install).
DATA_DIR := $(shell [ -x $(PY) ] && $(PY) -m vptlib.study.profile $(PROFILE_FILE) data 2>/dev/null)
# The experiment pages the Curves page waits for: those of the methods its sweeps run.
SWEEP_PAGES := $(patsubst %,$(GEN)/experiments/%.ipynb,$(shell [ -x $(PY) ] && $(PY) -m vptlib.study.profile $(PROFILE_FILE) sweep_methods 2>/dev/null))
# `make book` prints its wall time, install, model build and preflight included. The first
# make of a fresh clone restarts itself after installing (it reads vptlib's lists); GNU make
# re-executes itself in the same process, so the process's own start (ps etimes) is when
# `make` was typed, across that restart.
BOOK_START := $(shell echo $$(( $$(date +%s) - $$(ps -o etimes= -p $$PPID 2>/dev/null || echo 0) )))
# How busy other work keeps the machine: the time, make's reaped children's CPU ticks (the
# build so far) and the machine's CPU line of /proc/stat, as this make reads its Makefile (after
# a fresh clone's restart: once installed). The record compares them with the same at its end.
CLOSE := )# a literal ")" inside $(shell ...) would close it
BOOK_CPU := $(shell echo "$$(date +%s) $$(cut -d'$(CLOSE)' -f2 /proc/$$PPID/stat 2>/dev/null | awk '{print $$14 + $$15}') $$(head -1 /proc/stat 2>/dev/null)")
# When each stage of make book began (the install is what comes before the first): the record
# turns them into seconds a stage (vptlib.bench.output.book_stages).
STAGES = _build/book-stages-$(PROFILE).txt
stage = echo "$(1) $$(date +%s)" >> $(STAGES)
VPTLIB := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/vptlib
MODEL_ARG := $(if $(MODEL),--model "$$MODEL")
DATA_ARG := $(if $(DATA),--data "$$DATA")
# What the training pages were made from besides code and profile: the model (MODEL=, its
# commit and weights), the data folder and DRY_RUN, rewritten by preflight only when it
# changed, so another model or a toggled dry run re-executes them (vptlib.study.book.preflight).
INPUTS := _build/inputs-$(PROFILE).json
# One stamp per method, holding its overrides (make run sets them in runs/<profile>/overrides.yaml,
# make reset drops them; vptlib.study.overrides), rewritten only when they changed: so a
# changed override re-executes that method's page, and nothing else.
OVERRIDES := _build/overrides-$(PROFILE)
# The smoke profile's models are built here; the full profile's come from the hub or MODEL=.
MODEL_DEP = $(if $(filter smoke,$(PROFILE)),$(TINY)/model.safetensors $(TINY_B)/model.safetensors)

help:
	@echo "make install   create .venv and install the pinned requirements"
	@echo "make test      lint + the test suite (CPU, offline)"
	@echo "make lint      ruff check + ruff format --check"
	@echo "make format    ruff format + ruff check --fix"
	@echo "make book      run the study and render the report (PROFILE=full|smoke, DATA=, MODEL=, BACKBONES=, DRY_RUN=1,"
	@echo "               TIMEOUT=s, JOBS=n pages at once)"
	@echo "make pdf       the built book as one PDF, banner on every page: _build/pdf/book.pdf (after make book)"
	@echo "make bench     measure step time and memory of every method on this machine"
	@echo "make run       re-execute one experiment: make run NB=vpt_deep ARGS=\"-p lr 0.5\" (kept until make reset)"
	@echo "make reset     drop make run's overrides: make reset NB=vpt_deep (every method's without NB)"
	@echo "make sweep     run a profile's grid ahead of the book: make sweep SWEEP=fewshot|prompts [WORKERS=n]"
	@echo "               [LAUNCHER=submitit CLUSTER=local|slurm]: the same runs as submitit jobs"

# The packages' bytecode is compiled on every core at once (pip compiles one file at a time);
# always compiled ahead, since where PYTHONDONTWRITEBYTECODE is set, as in many containers,
# a process never caches what it compiles and each notebook page would compile torch anew
# (some 10 s a page). The pins name every extra's packages, so vptlib itself installs without
# resolving again, and without an isolated build environment where the venv's setuptools can.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -r requirements.txt
	$(PY) -m compileall -q -j 0 $$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") >/dev/null || true
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
	  || $(PY) -m pip install -q -c requirements.txt -e ".[dev]"
	touch $@

install: $(STAMP)

# The offline model: a tiny CLIP whose vision tower is warmed up on separate phantoms
# (~30 s on 2 cores). Tests and the smoke profile share it.
TINY := models/tiny-clip
$(TINY)/model.safetensors: $(STAMP) vptlib/study/pretrain.py vptlib/data/phantoms.py vptlib/models/offline.py
	$(VENV)/bin/vptlib model tiny --out $(TINY) --pretrain-epochs 20

# The smoke profile's second backbone (its `backbones:`): the same architecture, another
# seed and a shorter warm-up, so a backbone comparison runs offline (~15 s on 2 cores).
TINY_B := models/tiny-clip-b
$(TINY_B)/model.safetensors: $(STAMP) vptlib/study/pretrain.py vptlib/data/phantoms.py vptlib/models/offline.py
	$(VENV)/bin/vptlib model tiny --out $(TINY_B) --seed 1 --pretrain-epochs 10

tiny-model: $(TINY)/model.safetensors $(TINY_B)/model.safetensors

lint: install
	$(VENV)/bin/ruff check vptlib tests
	$(VENV)/bin/ruff format --check vptlib tests

format: install
	$(VENV)/bin/ruff format vptlib tests
	$(VENV)/bin/ruff check --fix vptlib tests

# The suite on two workers, a test file at a time each (--dist loadfile: a file's module
# fixtures, the smoke book's copy of the tree, stay on one worker), handed out in collection
# order (--no-loadscope-reorder), where tests/conftest.py puts the two book builds first: the
# smoke book's tests and the full profile's dry run build beside each other while the short
# files fill in around them. PYTEST_ARGS="-n 0" runs it in one.
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder
test: install lint browser
	@VPTLIB_PROCESSES=2 $(MAKE) --no-print-directory -j2 $(TINY)/model.safetensors $(TINY_B)/model.safetensors
	VPTLIB_TINY_MODEL=$(TINY) $(PY) -m pytest $(PYTEST_ARGS)

# ---------------------------------------------------------------- the report
book: install
	@test -n "$(METHODS)" || { echo "make book: cannot list the methods (python -m vptlib.cli.run_flags --make failed)" >&2; exit 2; }
	@# The smoke profile's two tiny models warm up at once, with the phantoms beside them (a
	@# tiny model's step gains little from a second thread: one each, two cores busy).
	@mkdir -p _build && echo "models $$(date +%s)" > $(STAGES)
	@$(if $(MODEL_DEP),VPTLIB_PROCESSES=2 $(MAKE) --no-print-directory -j2 $(MODEL_DEP) $(if $(DATA_DIR),$(DATA_DIR)/manifest.csv))
	@$(call stage,checks)
	@$(VPTLIB) book preflight --profile $(PROFILE_FILE) $(DATA_ARG) $(MODEL_ARG) --stamp $(INPUTS) --overrides $(OVERRIDES)
	@$(VPTLIB) book guard --profile $(PROFILE_FILE) --dir $(GEN)
	@$(call stage,pages)
	@VPTLIB_PROCESSES=$(JOBS) $(MAKE) --no-print-directory -j$(JOBS) notebooks PROFILE=$(PROFILE)
	@$(call stage,html)
	@$(VPTLIB) book toc --out _build/_toc.yml --profile $(PROFILE_FILE) --facts-dir $(GEN) $(MODEL_ARG)
	$(VENV)/bin/jupyter-book build . --toc _build/_toc.yml -W -n --keep-going -q
	@$(VPTLIB) book timed --profile $(PROFILE_FILE) --started $(BOOK_START) --out _build/book-time-$(PROFILE).json \
		--cpu-at-start "$(BOOK_CPU)" --build-pid $$PPID --stages $(STAGES)
	@echo "HTML report: $(CURDIR)/_build/html/index.html"

# The executed pages as one PDF (Jupyter Book's single-page HTML, printed by Chromium
# offline: vptlib.study.pdf). It renders what make book executed; it executes nothing.
pdf: install
	@test -f $(GEN)/PROFILE || { echo "make pdf: there is no executed book to print; run make book PROFILE=$(PROFILE) first" >&2; exit 2; }
	@$(VPTLIB) book toc --out _build/_toc.yml
	$(VENV)/bin/jupyter-book build . --toc _build/_toc.yml --builder singlehtml -W -n --keep-going -q
	@$(VPTLIB) book pdf --html _build/singlehtml/index.html --out _build/pdf/book.pdf

# Under make -j, pages start in this order as slots free up: the longest first, so none is
# left running alone at the end. The variants page needs no other page; the Curves page (the
# sweeps) needs only its methods' experiment pages, so they come next and it follows them.
notebooks: $(GEN)/variants.ipynb $(SWEEP_PAGES) $(GEN)/curves.ipynb $(EXPERIMENTS) $(GEN)/dataset.ipynb \
	$(GEN)/results.ipynb $(GEN)/attention.ipynb $(GEN)/reproducibility.ipynb $(GEN)/checklist.ipynb $(GEN)/benchmark.ipynb

$(DATA_DIR)/manifest.csv: $(PROFILE_FILE) vptlib/data/prepare.py vptlib/data/phantoms.py | $(STAMP)
	$(VPTLIB) book data --profile $(PROFILE_FILE) $(DATA_ARG)

# Make's own dependency tracking decides what re-executes: a page reruns only when its
# template, the profile, the code that makes it (PAGE_SRC_<template>), the data or the model changed.
$(GEN)/dataset.ipynb: notebooks/dataset.ipynb $(PROFILE_FILE) $(RUN_SRC) $(PAGE_SRC_dataset) $(DATA_DIR)/manifest.csv $(MODEL_DEP) $(INPUTS)
	$(VPTLIB) book execute notebooks/dataset.ipynb $@ --profile $(PROFILE_FILE) $(MODEL_ARG)

$(INPUTS): | $(STAMP)
	@$(VPTLIB) book preflight --profile $(PROFILE_FILE) $(DATA_ARG) $(MODEL_ARG) --stamp $@

$(OVERRIDES)/%.json: | $(STAMP)
	@$(VPTLIB) book overrides --profile $(PROFILE_FILE) --stamps $(OVERRIDES) --methods $*

$(GEN)/experiments/%.ipynb: notebooks/experiment.ipynb $(PROFILE_FILE) $(RUN_SRC) $(PAGE_SRC_experiment) $(DATA_DIR)/manifest.csv $(MODEL_DEP) $(INPUTS) \
	$(OVERRIDES)/%.json
	$(VPTLIB) book execute notebooks/experiment.ipynb $@ --profile $(PROFILE_FILE) -p method $* --title-from-method $(MODEL_ARG)

$(GEN)/results.ipynb: notebooks/results.ipynb $(PAGE_SRC_results) $(EXPERIMENTS) $(GEN)/variants.ipynb
	$(VPTLIB) book execute notebooks/results.ipynb $@ --profile $(PROFILE_FILE)

# The profile's backbones and protocols (vptlib.study.variants): their runs are in folders of
# their own, so the page trains beside the experiment pages; the Results page reads both.
$(GEN)/variants.ipynb: notebooks/variants.ipynb $(PROFILE_FILE) $(RUN_SRC) $(PAGE_SRC_variants) $(DATA_DIR)/manifest.csv $(MODEL_DEP) $(INPUTS)
	$(VPTLIB) book execute notebooks/variants.ipynb $@ --profile $(PROFILE_FILE) $(MODEL_ARG)

$(GEN)/attention.ipynb: notebooks/attention.ipynb $(PAGE_SRC_attention) $(EXPERIMENTS)
	$(VPTLIB) book execute notebooks/attention.ipynb $@ --profile $(PROFILE_FILE)

# The sweeps reuse every point already finished by the same code (see `make sweep`), and
# start from each method's tuned setting: so under make -j they run after their methods'
# experiment pages, which tune them (order-only: a `make run` of one experiment does not
# re-execute this page).
$(GEN)/curves.ipynb: notebooks/curves.ipynb $(PROFILE_FILE) $(RUN_SRC) $(PAGE_SRC_curves) $(DATA_DIR)/manifest.csv $(MODEL_DEP) $(INPUTS) \
	| $(SWEEP_PAGES)
	$(VPTLIB) book execute notebooks/curves.ipynb $@ --profile $(PROFILE_FILE) $(MODEL_ARG)

$(GEN)/reproducibility.ipynb: notebooks/reproducibility.ipynb $(PAGE_SRC_reproducibility) $(EXPERIMENTS) $(GEN)/curves.ipynb
	$(VPTLIB) book execute notebooks/reproducibility.ipynb $@ --profile $(PROFILE_FILE)

# The appendix: the reporting checklists answered from every run's record.
$(GEN)/checklist.ipynb: notebooks/checklist.ipynb $(PAGE_SRC_checklist) $(EXPERIMENTS) $(GEN)/variants.ipynb
	$(VPTLIB) book execute notebooks/checklist.ipynb $@ --profile $(PROFILE_FILE)

# The appendix: the newest `make bench` table of each machine, trained nothing.
$(GEN)/benchmark.ipynb: notebooks/benchmark.ipynb $(wildcard benchmarks/results/*.md) $(PAGE_SRC_benchmark)
	$(VPTLIB) book execute notebooks/benchmark.ipynb $@ --profile $(PROFILE_FILE)

# Re-execute one experiment with new parameters; a following `make book` re-renders that
# page, the results and the reproducibility page, and re-runs nothing else.
# Every argument is checked before anything is written, and a build of another profile is
# refused, never cleared.
run: install $(MODEL_DEP)
	@test -n "$$NB" || { echo "usage: make run NB=<method> ARGS=\"-p lr 0.5\"  (methods: $(METHODS))"; exit 2; }
	$(VPTLIB) book rerun --profile-name "$$PROFILE" --method "$$NB" --args "$$ARGS" --dir $(GEN) $(MODEL_ARG) \
	  --stamps $(OVERRIDES)

# Drop the overrides make run set (NB=<method>, or every method's without NB); the next
# make book re-executes those pages with the profile's settings.
reset: install
	@$(VPTLIB) book overrides --profile $(PROFILE_FILE) --drop "$$NB" --stamps $(OVERRIDES)

# A profile's named grid (methods x seeds x training images or prompt lengths) as
# independent runs over the visible GPUs, or over CPU workers; the Curves page aggregates
# them. Finished points are reused and interrupted ones resume. LAUNCHER=submitit sends the
# same runs through submitit (CLUSTER=local subprocesses, or slurm jobs; vptlib.study.launch).
sweep: install $(MODEL_DEP)
	@test -n "$$SWEEP" || { echo "usage: make sweep SWEEP=<name> [PROFILE=smoke] [WORKERS=n]  (names: the profile's sweeps)"; exit 2; }
	@$(VPTLIB) book preflight --profile $(PROFILE_FILE) $(DATA_ARG) $(MODEL_ARG)
	@$(MAKE) --no-print-directory $(DATA_DIR)/manifest.csv PROFILE=$(PROFILE)
	$(VPTLIB) sweep --profile $(PROFILE_FILE) --name "$$SWEEP" $(if $(WORKERS),--workers "$$WORKERS") $(MODEL_ARG) \
	  $(if $(LAUNCHER),--launcher "$$LAUNCHER") $(if $(CLUSTER),--cluster "$$CLUSTER")

# Cost of each method on the real ViT-B/32 architecture (random weights), one process per
# configuration; writes benchmarks/results/<machine>.{json,md,png} and scaling-<machine>.{json,md}.
# About 50 minutes on 2 cores: some 30 for the timing rounds and peers, 19 for the scaling rows
# (measured on amd-epyc-2t; making the phantom sets, once, adds about 3).
bench: install
	$(PY) -m vptlib.bench

# Debian's Chromium and its driver, for the browser check of the built report. Installing
# them needs root or password-less sudo; without either, the browser test is skipped with
# a line saying how to enable it, except under CI (CI set), where it must run.
CHROMIUM ?= chromium
CHROMEDRIVER ?= chromedriver
browser:
	@if command -v $(CHROMIUM) >/dev/null && command -v $(CHROMEDRIVER) >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	elif [ -n "$$CI" ]; then echo "make browser: chromium is missing and there is no root or sudo to install it; CI needs the browser check" >&2; exit 1; \
	else echo "make browser: chromium is missing and needs root to install: the browser test will be skipped (enable it with: sudo make browser)"; exit 0; fi; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium chromium-driver

# Build outputs only: run records (runs/), data and models are results and inputs, never
# removed by make; delete them yourself if you mean to.
# book/generated: only the pages vptlib wrote there (its list), never a file of yours.
clean:
	@if [ -x $(VENV)/bin/vptlib ]; then $(VENV)/bin/vptlib book clean --dir $(GEN); fi
	rm -rf _build .pytest_cache
