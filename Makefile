# Two entry points for a fresh machine (see README):  make demo   |   make test
#
# torch is installed first and pinned, so pip never resolves an open-ended torch requirement. Which build:
#   * no NVIDIA GPU (no working `nvidia-smi`): the CPU-only wheel from PyTorch's index, TORCH_INDEX below
#     (a plain `pip install torch==X` on x86-64 Linux gets the CUDA build from PyPI, several GB);
#   * an NVIDIA GPU: PyPI's default build, which is the CUDA one.
# If the CPU index cannot be reached (offline, behind a mirror), the pin is installed from pip's configured
# index and wheel folders instead, with a note. Overrides:
#   make setup TORCH_SPEC="torch==2.5.1"                                   another version
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cu124          another build (index)
#   make setup TORCH_INDEX=                                                pip's configured index only
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
HAVE_NVIDIA_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_INDEX ?= $(if $(HAVE_NVIDIA_GPU),,$(TORCH_CPU_INDEX))
BIN := $(VENV)/bin
# exit 0 when the index answers for torch (an http(s) index within 10 s, or a file:// folder that exists)
define INDEX_PROBE
import os, sys, urllib.parse, urllib.request
url = sys.argv[1].rstrip("/") + "/torch/"
parts = urllib.parse.urlparse(url)
if parts.scheme == "file":
    sys.exit(0 if os.path.isdir(urllib.request.url2pathname(parts.path)) else 1)
urllib.request.urlopen(url, timeout=10)
endef
export INDEX_PROBE
PIP := $(BIN)/python -m pip

.PHONY: setup browser demo test test-all lint docs clean

$(BIN)/fcpose: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@if [ -n "$(TORCH_INDEX)" ] && $(BIN)/python -c "$$INDEX_PROBE" "$(TORCH_INDEX)" 2>/dev/null; then \
	    echo "installing $(TORCH_SPEC) from $(TORCH_INDEX)$(if $(HAVE_NVIDIA_GPU),, (no NVIDIA GPU found: CPU-only build))"; \
	    $(PIP) install --quiet --index-url "$(TORCH_INDEX)" "$(TORCH_SPEC)" || { \
	        echo "note: $(TORCH_INDEX) could not provide $(TORCH_SPEC); installing it from pip's configured index"; \
	        $(PIP) install --quiet "$(TORCH_SPEC)"; }; \
	elif [ -n "$(TORCH_INDEX)" ]; then \
	    echo "note: $(TORCH_INDEX) cannot be reached (offline?): installing $(TORCH_SPEC) from pip's configured index and wheel folders (on x86-64 Linux, PyPI would give the CUDA build)"; \
	    $(PIP) install --quiet "$(TORCH_SPEC)"; \
	else \
	    echo "installing $(TORCH_SPEC) from pip's configured index$(if $(HAVE_NVIDIA_GPU), (NVIDIA GPU found: default CUDA build))"; \
	    $(PIP) install --quiet "$(TORCH_SPEC)"; \
	fi
# xtcocotools (the CrowdPose protocol; in the dev extra): its PyPI wheel was built against numpy 1.x and does not import
# under numpy 2, and its sdist needs numpy and Cython to build, so it is built first, against the numpy installed here
# (no build isolation); the dev install then finds it installed and never fetches the broken wheel
	$(PIP) install --quiet numpy cython setuptools
	$(PIP) install --quiet --no-binary xtcocotools --no-build-isolation "xtcocotools>=1.14"
	$(PIP) install --quiet -e ".[dev]"
	@$(BIN)/python -c "import torch; print(f'torch {torch.__version__} ({\"CUDA \" + torch.version.cuda if torch.version.cuda else \"CPU only\"})')"
	@touch $(BIN)/fcpose

setup: $(BIN)/fcpose
	@echo "ready: source $(VENV)/bin/activate (then fcpose --help), or run $(BIN)/fcpose directly"

# the authors' COCO model on a COCO photo when its weights can be downloaded, else the bundled synthetic
# model on a synthetic scene (one line says which and why); WEIGHTS=... picks the weights yourself
demo: setup
	$(BIN)/fcpose demo --out demo_out $(if $(WEIGHTS),--weights $(WEIGHTS))
	@echo "to run fcpose yourself: source $(VENV)/bin/activate, then e.g. fcpose predict PHOTO.jpg --weights fcpose_r50_official --out out (or $(BIN)/fcpose ...)"

# The browser test of `fcpose serve` (tests/test_serve_browser.py) drives Debian's chromium with its chromedriver
# (Selenium). Installed here when missing and we are root with apt-get (as CI is); otherwise that test skips and
# says why. apt's output goes to a log; the package lists are refreshed only when the first try fails.
APT_LOG := $(or $(TMPDIR),/tmp)/fcpose-apt-chromium.log
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver with apt-get for the browser test (log: $(APT_LOG))"; \
	    { $(APT_INSTALL) >$(APT_LOG) 2>&1 || { apt-get update -q >>$(APT_LOG) 2>&1 && $(APT_INSTALL) >>$(APT_LOG) 2>&1; }; } \
	    || echo "note: apt-get could not install chromium (see $(APT_LOG)): the browser test will skip"; \
	else \
	    echo "note: no chromium + chromedriver, and not root with apt-get to install them: the browser test will skip"; \
	fi

test: setup browser
	$(BIN)/lint-imports --no-cache  # the layers of docs/architecture.md (contracts in pyproject.toml)
	$(BIN)/python -m pytest -q

test-all: setup browser
	$(BIN)/python -m pytest -q --runslow

lint: setup
	$(BIN)/ruff check fcpose tests benchmarks docs/mkdocs_hooks.py
	$(BIN)/lint-imports --no-cache

# the documentation site into site/ (mkdocs.yml; open site/index.html); strict: a broken link or docstring fails
docs: setup
	$(BIN)/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) demo_out .pytest_cache site
