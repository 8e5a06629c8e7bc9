# alchemist: every entry point sets itself up first (a fresh clone needs only python3.11, make and npm).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
PROFILE ?= quick
TABLE ?= all
JOBS ?= 2
export ALCHEMIST_ROOT := $(CURDIR)
# torch threads sleep instead of spinning while they wait: on a shared 2-core box spinning threads starve each other
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test lab docs notebooks reproduce budget bench export clean-nbs check-nbs help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

# torch and torchvision are pinned inside settings.ini and so installed in the same pip call as the rest.
$(STAMP): settings.ini setup.py
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found; install Python 3.11 or run 'make PY=python3 ...'"; exit 1; }
	@# the venv holds a CUDA build of torch (~6.6 GB): say so before pip dies half-way with 'No space left on device'
	@free_kb=$$(df -Pk . | awk 'NR==2 {print $$4}'); \
	if [ -z "$(SKIP_DISK_CHECK)" ] && [ "$$free_kb" -lt $$((7 * 1024 * 1024)) ]; then \
	  echo "error: setup needs about 7 GB free for $(VENV) (torch is a CUDA build); $$((free_kb / 1024)) MB free here. Free some space or set SKIP_DISK_CHECK=1."; exit 1; fi
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[dev]" 2>&1 | sed '/is ignored: it is neither a file nor a directory/d'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (alchemist)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the package with its dev extras

demo: $(STAMP)  ## smallest end-to-end job on the embedded synthetic corpus
	$(BIN)/alchemist demo --profile smoke

test: $(STAMP)  ## notebook tests (nbdev_test) then pytest; fails when no test ran
	ALCHEMIST_PROGRESS=0 $(BIN)/nbdev_test --n_workers 2 --do_print
	ALCHEMIST_PROGRESS=0 $(BIN)/pytest tests

lab: $(STAMP)  ## JupyterLab on the project's kernel
	$(BIN)/jupyter lab --notebook-dir=nbs $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

docs: $(STAMP)  ## documentation site from the outputs stored in the notebooks (nbdev_docs where Quarto exists, else HTML in _docs/); executes nothing
	$(BIN)/python scripts/build_docs.py

notebooks: $(STAMP)  ## re-execute the notebooks and store their outputs (fast cells; make notebooks NB=05_t2i,09_select SLOW=1 for the slow ones too)
	ALCHEMIST_PROGRESS=0 $(BIN)/python scripts/run_notebooks.py $(if $(NB),--only $(NB)) $(if $(SLOW),--slow)

reproduce: $(STAMP)  ## regenerate the paper tables: make reproduce PROFILE=quick|paper TABLE=all|T1|... JOBS=2 (notebooks at once)
	$(BIN)/alchemist reproduce --table $(TABLE) --profile $(PROFILE) --jobs $(JOBS)

budget: $(STAMP)  ## what a profile costs here: runs per table, finished runs, estimated CPU-hours, compute floor (make budget PROFILE=paper)
	$(BIN)/python scripts/paper_budget.py --profile $(PROFILE) --floor

bench: $(STAMP)  ## throughput benchmarks; figures go to reports/benchmarks/
	$(BIN)/python scripts/bench_all.py

export: $(STAMP)  ## notebooks -> alchemist/ package, then clean notebooks
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean
