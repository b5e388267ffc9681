# mmlib: `make book` executes every notebook at demo scale and builds the HTML book;
# `make test` runs the test suite; `make lab` starts JupyterLab on the repository. All three
# create or refresh the virtual environment .venv/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mmlib-installed
SCALE ?= demo
EXECUTED ?= _build/executed-$(SCALE)
PYTEST_ARGS ?=
LAB_PORT ?= 8888

.PHONY: venv book test lab publish clean sync

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel here, the CUDA build of the same release on GPU machines
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,log]'
	# lesion-wise metrics (mmlib.evaluate.lesions): panoptica 2.1.x declares numpy<2.3, pandas<3,
	# rich<14 and connected-components-3d<4, but works with the pinned newer ones (tested by
	# tests/test_evaluate_lesions.py); pip's resolver would refuse them, so its import-time
	# dependencies are installed first and panoptica itself without dependencies
	$(BIN)/python -m pip install -q -c constraints.txt ruamel.yaml plotly connected-components-3d
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt panoptica
	$(BIN)/python tools/jupyterlab_setup.py
	@touch $(STAMP)

# (re)installed on every run too, so that a venv made before the script existed gets it; it only
# writes what is out of date
venv: $(STAMP)
	@$(BIN)/python tools/jupyterlab_setup.py

book: venv
	$(BIN)/mmlib notebooks run --scale $(SCALE) --out $(EXECUTED)
	$(BIN)/mmlib book --executed $(EXECUTED) --out .
	@echo "The book is in _build/html/index.html (serve it: $(BIN)/python -m http.server -d _build/html)"

# lint and types first: a finding fails the target before the (long) test suite starts
test: venv
	@tools/sysdeps.sh check
	$(BIN)/ruff check mmlib tests benchmarks
	$(BIN)/ruff format --check mmlib tests benchmarks
	$(BIN)/mypy mmlib
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# JupyterLab on the repository, loopback only; it prints the URL (with its token) to open.
# A click on notebooks/NN_name.py opens the chapter as a notebook; the kernel is .venv's Python.
lab: venv
	@echo "JupyterLab: open the http://127.0.0.1:...lab?token=... URL printed below, then click a chapter in notebooks/"
	$(BIN)/jupyter lab --ip=127.0.0.1 --port=$(LAB_PORT) --ServerApp.root_dir="$(CURDIR)"

sync: venv
	$(BIN)/jupytext --sync notebooks/*.py

publish: book
	@echo "Push to GitHub: .github/workflows/book.yml builds the book and deploys _build/html to GitHub Pages."
	@echo "By hand: $(BIN)/ghp-import -n -p -f _build/html"

clean:
	rm -rf _build runs
