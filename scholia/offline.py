"""Process-wide switches that keep every library offline and out of the home directory.

Applied by an explicit call at each entry point (the `scholia` command, the API app factory,
`python -m` mains, the tests' conftest) before any third-party library loads; importing a
Scholia package changes no environment variable.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "RAGAS_DO_NOT_TRACK": "true",
    "ANONYMIZED_TELEMETRY": "False",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def _tiktoken_cache() -> str | None:
    try:
        spec = importlib.util.find_spec("llama_index.core")
    except ModuleNotFoundError:  # the vLLM environment has no LlamaIndex
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "_static" / "tiktoken_cache"
    return str(folder) if folder.is_dir() else None


def apply_offline_env(data_dir: Path) -> None:
    """Set the switches; caches and logs of libraries go under `data_dir` (Settings.data_dir)."""
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value
    cache = _tiktoken_cache()
    if cache:
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", cache)
    # Libraries that cache or log under $HOME write under the data directory instead.
    os.environ.setdefault("HF_HOME", str(data_dir / "cache" / "huggingface"))
    os.environ.setdefault("MPLCONFIGDIR", str(data_dir / "cache" / "matplotlib"))
    os.environ.setdefault("XDG_CACHE_HOME", str(data_dir / "cache"))
    os.environ.setdefault("XDG_DATA_HOME", str(data_dir / "share"))
    os.environ.setdefault("GRADIO_TEMP_DIR", str(data_dir / "cache" / "gradio"))
