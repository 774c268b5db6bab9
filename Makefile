# The two commands of the README (make demo, make test) and more (make docs, make lab, make reproduce, make clean).
# Each creates the virtual environment from pyproject.toml if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.percept-installed
OUT := $(CURDIR)/outputs
# make reproduce DATA_ROOT=/data/percept  (default: $PERCEPT_DATA_ROOT or reproduce.yaml's data_root)
DATA_ROOT ?=

.PHONY: demo test docs lab reproduce reproduce-plan reproduce-smoke gpu-check gpu-wheels install clean

# The environment: the package (editable) with the test and notebook extras; the notebooks run on the
# `python3` Jupyter kernel that ipykernel installs into the environment (registered here if it is missing).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,notebooks]'
	@$(PY) -m jupyter kernelspec list 2>/dev/null | grep -q '^ *python3 ' || \
		$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (percept)"
	@touch $(STAMP)

install: $(STAMP)

## The main job on the embedded defaults: every notebook (notebooks/00..10) executed with papermill, offline,
## on the CPU, in minutes. Executed copies, tables and runs go to outputs/notebooks/, figures to figures/.
demo: $(STAMP)
	$(PY) -m percept notebooks --out $(OUT)/notebooks

## The test suite (no GPU, no internet needed); it also executes every notebook on its smallest parameters.
test: $(STAMP)
	$(PY) -m pytest

## The study's site, offline, from the notebooks `make demo` executed: outputs/site/index.html (mkdocs.yml,
## tools/build_docs.py). With Chromium on the machine it also photographs the IQA page for the README.
docs: $(STAMP)
	$(PY) tools/build_docs.py --notebooks $(OUT)/notebooks --out $(OUT)/site --screenshot $(OUT)/site_screenshots/iqa_page.png

## JupyterLab on the notebooks, with this environment's kernel.
lab: $(STAMP)
	$(PY) -m jupyter lab --notebook-dir=notebooks

## The paper's experiments (reproduce.yaml) on the real datasets with CLIP ViT-L/14: GPUs, prepared datasets,
## thousands of GPU hours. Not run in CI. `make reproduce-plan` prints the plan and its estimated cost.
reproduce: $(STAMP)
	$(PY) -m percept reproduce --config reproduce.yaml --out $(OUT)/reproduce $(if $(DATA_ROOT),--data-root $(DATA_ROOT))

reproduce-plan: $(STAMP)
	$(PY) -m percept reproduce --config reproduce.yaml --dry-run

## Every experiment of reproduce.yaml for one epoch on generated fixture datasets (CPU, a few minutes; CI runs it
## through the tests): checks that every configured table runs, computes nothing about the paper.
reproduce-smoke: $(STAMP)
	$(PY) -m percept reproduce --config reproduce.yaml --smoke --out $(OUT)/reproduce_smoke

## Every GPU number the project reports, in one command (<= 8 minutes on one H100; a dry run without a GPU):
## JSON, a Markdown table and a profile under outputs/gpu_check/, the table printed last.
gpu-check: $(STAMP)
	$(PY) -m percept bench --suite gpu-check --out $(OUT)/gpu_check

## The wheels of the tested timm and peft (the libraries whose internals we use) in .whl/, for a GPU machine that
## has PyTorch but not this environment: `bash tools/gpu_check.sh DIR` there installs them first.
gpu-wheels: $(STAMP)
	rm -rf .whl
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --dest .whl \
		$$($(PY) -c "from importlib.metadata import version; print(*(f'{n}=={version(n)}' for n in ('timm', 'peft')))")
	@ls .whl

clean:
	rm -rf $(OUT) .pytest_cache
