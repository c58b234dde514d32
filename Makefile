# The course's commands. `make lab` to learn, `make test` to check everything.
#
# TORCH is installed before anything else. The default takes torch 2.13.0; on a
# machine whose pip finds no CPU build, or with a GPU, pass your own, e.g.
#   make test TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
#   make lab  TORCH=torch
PYTHON   ?= python3
VENV     ?= .venv
TORCH    ?= torch==2.13.0
LAB_ARGS ?=
PYTEST_ARGS ?=

# JupyterLab refuses to start as root (containers, some cloud machines) unless told.
AS_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

BIN   := $(VENV)/bin
PY    := $(BIN)/python
READY := $(VENV)/.ready

.PHONY: setup lab test notebooks site gpu-check clean

## setup: create .venv with torch, attnlib (editable) and its development tools
setup: $(READY)

$(READY): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(READY)

## lab: open the course in JupyterLab (extra arguments: LAB_ARGS="--no-browser --port=8899")
# A learner's lab: without nbgrader's menu, buttons and server extensions, and without the
# "news" pop-up or any request to the internet (tools/jupyterlab/README.md says how).
LAB_SETTINGS := $(CURDIR)/tools/jupyterlab
lab: setup
	JUPYTER_CONFIG_PATH="$(LAB_SETTINGS)$(if $(JUPYTER_CONFIG_PATH),:$(JUPYTER_CONFIG_PATH))" $(BIN)/jupyter lab --notebook-dir=notebooks \
		--LabApp.app_settings_dir="$(LAB_SETTINGS)" --LabApp.news_url=None $(AS_ROOT) $(LAB_ARGS)

## test: attnlib's unit tests, then every notebook (masters and learner versions) under nbval
test: setup
	$(PY) -m pytest -n 2 --dist loadscope --nbval-lax --nbval-current-env --nbval-cell-timeout=300 \
		--durations=0 tests notebooks $(PYTEST_ARGS)

## notebooks: regenerate the learner notebooks (badges, setup cells, stubs) from the masters
notebooks: setup
	$(PY) tools/build_notebooks.py

## site: the web book of the executed lessons in docs/_build/html (cached: a second run re-executes only changed lessons)
site: setup
	$(PY) tools/build_site.py

## gpu-check: every master notebook on a CUDA GPU (ATTNLIB_DEVICE=cuda), then `python -m attnlib.bench
## --device cuda`, with a compact report. Needs a CUDA build of torch, numpy, matplotlib and tqdm, but no
## Jupyter: the cells run without a kernel. Uses .venv if there is one, else python3. Fails clearly
## without CUDA; GPU_CHECK_ARGS="--dry-run" checks the plan on a CPU, "--only 05 10" runs some lessons.
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_CHECK_ARGS ?=
gpu-check:
	$(GPU_PYTHON) tools/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache docs/_build
