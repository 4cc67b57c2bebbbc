# advx developer commands. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ADVX := $(VENV)/bin/advx
export ADVX_DATA_DIR ?= $(abspath ../shared/data)

.DEFAULT_GOAL := help
.PHONY: help install test test-slow lint main ilyas gilmer li2023 maxout bench bench-deps gpu-check clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	# Plain `torch` from the registry: the CUDA build, which also runs on the CPU and pairs with torchvision.
	$(VENV)/bin/pip install -e '.[test,joblib,submitit]'
	$(PY) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

install: $(VENV)/.installed  ## create .venv and install advx with its test extras, from scratch

test: $(VENV)/.bench-deps  ## run the test suite (CPU, synthetic data, a few minutes)
	$(PY) -m pytest -q

test-slow: install  ## run the slow tests too (real MNIST)
	$(PY) -m pytest -q -m "slow"

lint: install  ## ruff over src and tests
	$(VENV)/bin/ruff check src tests

main: install  ## the main job: reproduce Goodfellow et al. 2015 on MNIST (scale=cpu, about 14 min)
	$(ADVX) reproduce goodfellow2015 scale=cpu

ilyas: install  ## reproduce Ilyas et al. 2019 on Fashion-MNIST: D_R, D_NR, D_rand, D_det (scale=cpu, about 25 min)
	$(ADVX) reproduce ilyas2019 scale=cpu

gilmer: install  ## reproduce Gilmer et al. 2018, adversarial spheres (scale=cpu, about 3 min)
	$(ADVX) reproduce gilmer2018 scale=cpu

li2023: install  ## reproduce Li et al. 2023: SL / SimCLR / MAE / DDPM on D, D_R, D_NR (scale=cpu, about 31 min)
	$(ADVX) reproduce li2023 scale=cpu

maxout: install  ## train the maxout MLP on MNIST (30 epochs) and FGSM-attack it
	$(ADVX) train experiment=mnist_maxout hydra.run.dir=outputs/maxout/train
	$(ADVX) attack run=outputs/maxout/train attack=fgsm 'attack.eps=[0.1,0.25]' hydra.run.dir=outputs/maxout/attack

bench: bench-deps  ## time advx against bare PyTorch loops and against torchattacks (MNIST)
	$(ADVX) bench

# torchattacks 3.5.1 pins requests~=2.25.1, which would downgrade the environment: install it without its
# dependencies, with the two it imports (scipy comes with advx's own). pip check may then report only that
# requests is missing (torchattacks never imports it); anything else it reports fails the recipe.
$(VENV)/.bench-deps: $(VENV)/.installed
	$(VENV)/bin/pip install --no-deps 'torchattacks==3.5.1' 'tqdm>=4.56'
	! $(VENV)/bin/pip check | grep -v -e '^torchattacks 3.5.1 requires requests' -e '^No broken requirements'
	$(PY) -c "import torchattacks; print('torchattacks', torchattacks.__version__)"
	touch $@

bench-deps: $(VENV)/.bench-deps  ## install torchattacks (an optional benchmark dependency) without its requests pin

gpu-check: install  ## on a CUDA machine: the `gpu` tests, then timed scale=paper slices of each paper
	$(PY) -m pytest -q -m gpu -p no:cacheprovider
	$(PY) -m advx.gpu_check

clean:  ## remove caches and outputs (keeps .venv)
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info multirun
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
