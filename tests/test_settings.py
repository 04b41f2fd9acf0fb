"""Configuration: `SCHOLIA_<SECTION>_<FIELD>` variables, the TOML file, precedence, `scholia config`.

Deployments (docker-compose.yml, Kubernetes) configure Scholia by environment only, so these
mappings are the contract they rely on.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

from assistant.cli import app
from ingest.keyword_postgres import PostgresKeywordStore
from ingest.pipeline import keyword_index
from scholia.settings import Settings, config_path, get_settings

SECRET = "sk-test-0123456789-do-not-print"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No SCHOLIA_* from the caller (the Makefile exports SCHOLIA_DATA_DIR); a fresh cache."""
    for name in list(os.environ):
        if name.startswith("SCHOLIA_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _config_output(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ------------------------------------------------------------------------------ environment
def test_endpoints_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCHOLIA_LLM_URL", "http://vllm:8000/v1")
    monkeypatch.setenv("SCHOLIA_INDEX_CHROMA_URL", "http://chroma:8000")
    monkeypatch.setenv("SCHOLIA_DATA_DIR", str(tmp_path / "state"))

    settings = Settings()

    assert settings.llm.url == "http://vllm:8000/v1"
    assert settings.index.chroma_url == "http://chroma:8000"
    assert settings.data_dir == tmp_path / "state"
    assert settings.chroma_dir == tmp_path / "state" / "chroma"
    assert settings.models_dir == tmp_path / "state" / "models"


def test_every_deployment_knob_from_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The issue's list: LLM URL, served model, LLM API key, Chroma URL or path, embedding model
    path, chunking, top-k; field names with underscores split only at the section."""
    env = {
        "SCHOLIA_LLM_MODEL": "qwen2.5-7b-instruct",
        "SCHOLIA_LLM_API_KEY": SECRET,
        "SCHOLIA_LLM_MAX_ANSWER_TOKENS": "512",
        "SCHOLIA_LLM_TIMEOUT_S": "30.5",
        "SCHOLIA_INDEX_COLLECTION": "arxiv",
        "SCHOLIA_EMBEDDING_MODEL_PATH": str(tmp_path / "minilm"),
        "SCHOLIA_EMBEDDING_BATCH_SIZE": "256",
        "SCHOLIA_CHUNKING_MAX_TOKENS": "200",
        "SCHOLIA_CHUNKING_OVERLAP_TOKENS": "16",
        "SCHOLIA_RETRIEVAL_TOP_K": "8",
        "SCHOLIA_RETRIEVAL_MODE": "dense",
        "SCHOLIA_SERVER_HOST": "0.0.0.0",
        "SCHOLIA_SERVER_PORT": "9000",
        "SCHOLIA_SERVER_CORS_ORIGINS": '["https://a.example", "https://b.example"]',
        "SCHOLIA_CORPUS": str(tmp_path / "papers.jsonl"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    s = Settings()

    assert s.llm.model == "qwen2.5-7b-instruct"
    assert isinstance(s.llm.api_key, SecretStr)
    assert s.llm.api_key.get_secret_value() == SECRET
    assert s.llm.max_answer_tokens == 512
    assert s.llm.timeout_s == 30.5
    assert s.index.collection == "arxiv"
    assert s.embedding.model_path == tmp_path / "minilm"
    assert s.embedding.batch_size == 256
    assert (s.chunking.max_tokens, s.chunking.overlap_tokens) == (200, 16)
    assert (s.retrieval.top_k, s.retrieval.mode) == (8, "dense")
    assert (s.server.host, s.server.port) == ("0.0.0.0", 9000)
    assert s.server.cors_origins == ["https://a.example", "https://b.example"]
    assert s.corpus == tmp_path / "papers.jsonl"
    # Untouched fields of a section keep their defaults.
    assert s.llm.url is None
    assert s.retrieval.rrf_k == Settings.model_fields["retrieval"].default.rrf_k


def test_invalid_environment_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHOLIA_RETRIEVAL_TOP_K", "0")
    with pytest.raises(ValidationError, match="top_k"):
        Settings()


def test_the_keyword_store_from_environment_and_postgres_needs_its_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().index.keyword == "local"  # the default: files in the data directory
    monkeypatch.setenv("SCHOLIA_INDEX_KEYWORD", "postgres")
    with pytest.raises(ValidationError, match="keyword_url"):
        Settings()
    monkeypatch.setenv("SCHOLIA_INDEX_KEYWORD_URL", "postgresql://scholia@db:5432/scholia")
    index = Settings().index
    assert (index.keyword, index.keyword_url) == (
        "postgres",
        "postgresql://scholia@db:5432/scholia",
    )
    assert index.keyword_candidates == 20_000
    monkeypatch.setenv("SCHOLIA_INDEX_KEYWORD_CANDIDATES", "5000")
    store = keyword_index(Settings())
    assert isinstance(store, PostgresKeywordStore) and store.candidate_budget == 5000


def test_defaults_without_environment() -> None:
    s = Settings()
    assert s.llm.url is None  # Scholia starts vLLM itself
    assert s.index.chroma_url is None  # embedded Chroma under the data directory
    assert s.server.host == "127.0.0.1"


# ------------------------------------------------------------------------------ TOML file
def _write_toml(path: Path, data_dir: Path) -> Path:
    path.write_text(
        f"""
data_dir = "{data_dir.as_posix()}"

[llm]
url = "http://from-file:8000/v1"
model = "model-from-file"
api_key = "{SECRET}"

[index]
chroma_url = "http://chroma-from-file:8000"

[retrieval]
top_k = 7
""",
        encoding="utf-8",
    )
    return path


def test_toml_file_named_by_scholia_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = _write_toml(tmp_path / "scholia.toml", tmp_path / "file-data")
    monkeypatch.setenv("SCHOLIA_CONFIG", str(config))

    s = Settings()

    assert config_path() == config
    assert s.llm.url == "http://from-file:8000/v1"
    assert s.llm.model == "model-from-file"
    assert s.llm.api_key.get_secret_value() == SECRET
    assert s.index.chroma_url == "http://chroma-from-file:8000"
    assert s.retrieval.top_k == 7
    assert s.data_dir == tmp_path / "file-data"


def test_environment_overrides_file_field_by_field(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = _write_toml(tmp_path / "scholia.toml", tmp_path / "file-data")
    monkeypatch.setenv("SCHOLIA_CONFIG", str(config))
    monkeypatch.setenv("SCHOLIA_LLM_URL", "http://from-env:8000/v1")
    monkeypatch.setenv("SCHOLIA_RETRIEVAL_TOP_K", "3")

    s = Settings()

    assert s.llm.url == "http://from-env:8000/v1"  # env wins
    assert s.retrieval.top_k == 3
    assert s.llm.model == "model-from-file"  # the rest of [llm] still comes from the file
    assert s.index.chroma_url == "http://chroma-from-file:8000"


def test_scholia_toml_in_the_data_dir_is_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "state"
    data_dir.mkdir()
    (data_dir / "scholia.toml").write_text("[retrieval]\ntop_k = 9\n", encoding="utf-8")
    monkeypatch.setenv("SCHOLIA_DATA_DIR", str(data_dir))

    assert config_path() == data_dir / "scholia.toml"
    assert Settings().retrieval.top_k == 9


# ------------------------------------------------------------------------------ scholia config
def test_scholia_config_prints_effective_settings_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = _config_output(
        monkeypatch,
        SCHOLIA_LLM_URL="http://vllm:8000/v1",
        SCHOLIA_INDEX_CHROMA_URL="http://chroma:8000",
        SCHOLIA_DATA_DIR=str(tmp_path / "state"),
        SCHOLIA_LLM_API_KEY=SECRET,
        SCHOLIA_SERVER_API_KEY=SECRET + "-server",
    )

    assert out["llm"]["url"] == "http://vllm:8000/v1"
    assert out["index"]["chroma_url"] == "http://chroma:8000"
    assert Path(out["data_dir"]) == tmp_path / "state"
    assert out["llm"]["api_key"] == "**********"
    assert out["server"]["api_key"] == "**********"
    result = CliRunner().invoke(app, ["config"])
    assert SECRET not in result.output


def test_scholia_config_masks_a_key_that_came_from_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = _write_toml(tmp_path / "scholia.toml", tmp_path / "file-data")
    out = _config_output(monkeypatch, SCHOLIA_CONFIG=str(config))

    assert out["llm"]["model"] == "model-from-file"
    assert out["llm"]["api_key"] == "**********"
    assert SECRET not in json.dumps(out)


def test_a_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCHOLIA_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(FileNotFoundError, match=r"nope\.toml"):
        Settings()


# ------------------------------------------------------------------------------ the only door
def test_scholia_api_key_is_another_name_for_the_server_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SCHOLIA_API_KEY", SECRET)
    key = Settings().server.api_key
    assert key is not None and key.get_secret_value() == SECRET
    out = _config_output(monkeypatch)
    assert out["server"]["api_key"] == "**********"
    # SCHOLIA_SERVER_API_KEY and the file's server.api_key win over it.
    monkeypatch.setenv("SCHOLIA_SERVER_API_KEY", "server-key")
    key = Settings().server.api_key
    assert key is not None and key.get_secret_value() == "server-key"
    monkeypatch.delenv("SCHOLIA_SERVER_API_KEY")
    config = tmp_path / "scholia.toml"
    config.write_text('[server]\napi_key = "file-key"\n', encoding="utf-8")
    monkeypatch.setenv("SCHOLIA_CONFIG", str(config))
    key = Settings().server.api_key
    assert key is not None and key.get_secret_value() == "file-key"


def test_scholia_config_names_the_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert _config_output(monkeypatch, SCHOLIA_DATA_DIR=str(tmp_path))["config_file"] is None
    config = _write_toml(tmp_path / "scholia.toml", tmp_path / "file-data")
    assert _config_output(monkeypatch)["config_file"] == str(config)


SOURCE_PACKAGES = ("assistant", "ingest", "eval", "prompts", "scholia")


def _environment_reads(path: Path) -> list[tuple[str, int]]:
    """(variable or "?", line) for each `os.environ.get(…)`, `os.getenv(…)`, `os.environ[…]`
    read in a file."""
    reads = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        key: ast.expr | None = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = ast.unparse(node.func)
            if target in {"os.environ.get", "os.getenv", "environ.get", "getenv"} and node.args:
                key = node.args[0]
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and ast.unparse(node.value) in {"os.environ", "environ"}
        ):
            key = node.slice
        if key is not None:
            name = key.value if isinstance(key, ast.Constant) else "?"
            reads.append((str(name), node.lineno))
    return reads


def test_every_environment_variable_is_read_through_settings() -> None:
    """Only scholia/settings.py reads configuration from the environment."""
    root = Path(__file__).resolve().parent.parent
    stray = [
        f"{relative}:{line} reads {name}"
        for package in SOURCE_PACKAGES
        for path in sorted((root / package).rglob("*.py"))
        if (relative := path.relative_to(root).as_posix()) != "scholia/settings.py"
        for name, line in _environment_reads(path)
    ]
    assert not stray, "read these through Settings:\n" + "\n".join(stray)


def test_the_environment_read_finder_finds_reads(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        'import os\na = os.environ.get("A")\nb = os.getenv("B")\nc = os.environ["C"]\n'
        'os.environ["D"] = "1"\nos.environ.setdefault("E", "1")\n',
        encoding="utf-8",
    )
    assert _environment_reads(module) == [("A", 2), ("B", 3), ("C", 4)]
