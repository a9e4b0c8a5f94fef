# rslab: one-command set-up. Every target creates .venv and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rslab-installed
# torch 2.14.1 / torchvision 0.29.1 are the pinned pair on the project's machines;
# override (e.g. TORCH_SPEC="torch torchvision") on a machine with other wheels.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PROFILE ?= smoke
PYTEST_ARGS ?= -n 2

# Nothing is ever fetched from a model hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0
export MPLBACKEND := Agg

.PHONY: install tutorial notebooks notebooks-gen test lint test-fast bench gpu-check book book-check evidence clean strip

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	# sam2 on PyPI is a source package: build it against the installed torch, CPU only.
	$(PY) -c "import sam2" 2>/dev/null || SAM2_BUILD_CUDA=0 $(PY) -m pip install --quiet --no-build-isolation sam2==1.1.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

tutorial: install
	$(VENV)/bin/rslab notebooks run --profile $(PROFILE)
	$(MAKE) book

notebooks: install
	$(VENV)/bin/rslab notebooks run --profile $(PROFILE)

# one thread per xdist worker (and per notebook kernel): see tests/conftest.py
test: install lint
	OMP_NUM_THREADS=1 $(PY) -m pytest $(PYTEST_ARGS)

# ruff: pyflakes, pycodestyle (120 columns) and import order, configured in pyproject.toml
lint: install
	$(VENV)/bin/ruff check .

# unit tests only: no notebook runs, no multi-process training tests
test-fast: install
	OMP_NUM_THREADS=1 $(PY) -m pytest $(PYTEST_ARGS) -m "not notebook and not slow"

bench: install
	$(PY) -m benchmarks

# each notebook's full-size model for a few steps on one GPU (random weights, nothing downloaded):
# step time, peak GPU memory, images/s, CPU-vs-GPU agreement -> build/gpu_check.json (<= 10 min on one H100/H200)
gpu-check: install
	$(PY) -m benchmarks.gpu_check --out build/gpu_check.json

book: install
	$(VENV)/bin/rslab book build

# the built book must work offline (no remote script/stylesheet, no missing image); with Chromium
# installed, also a screenshot of a page with math, rendered with the network off
book-check: book
	$(VENV)/bin/rslab book check --screenshot build/book/screenshot.png

# regenerate every notebook from its generator script (outputs empty, stable cell ids)
notebooks-gen: install
	for f in notebooks/src/make_*.py; do $(PY) $$f || exit 1; done

strip: install
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean:
	rm -rf build artifacts .pytest_cache

# each notebook's key comparisons over seeds 0 1 2 (smoke settings, about 15 CPU minutes per seed;
# resumable): writes book/evidence.md and book/evidence.json. Not part of `make tutorial`.
SEEDS ?= 0 1 2
evidence: install
	$(VENV)/bin/rslab evidence run --profile $(PROFILE) --seeds $(SEEDS)
