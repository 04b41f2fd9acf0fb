from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant.api.main import create_app
from assistant.api.services import Services
from assistant.cli import app as cli
from eval.bench_load import (
    ASK,
    BAD_KINDS,
    EMPTY_QUESTION,
    EXPECTED,
    SEARCH,
    LoadTest,
    app_pid_for,
    client_roles,
    judge,
)
from scholia.settings import Settings
from tests.assistant.api.live import serve


def _unlimited(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"server": settings.server.model_copy(update={"rate_limit_per_minute": 0.0})}
    )


def test_roles_follow_the_mix_and_every_role_gets_a_client() -> None:
    assert sorted(client_roles(32)) == ["ask"] * 8 + ["bad"] * 8 + ["search"] * 16
    assert sorted(client_roles(3)) == ["ask", "bad", "search"]
    assert len(client_roles(7)) == 7
    with pytest.raises(ValueError, match="at least 3 clients"):
        client_roles(2)


def test_judge_tolerates_only_503_504_on_ask_and_wants_a_json_detail_on_refusals() -> None:
    assert judge(ASK, 200, b"{}") == ""
    assert judge(ASK, 503, b'{"detail": "LLM down"}') == ""
    assert judge(ASK, 504, b"") == ""
    assert judge(ASK, 500, b'{"detail": "internal error"}').startswith("500, expected 200")
    assert judge(SEARCH, 503, b"").startswith("503, expected 200")
    assert judge(EMPTY_QUESTION, 422, b'{"detail": "question: too short"}') == ""
    assert judge(EMPTY_QUESTION, 422, b"<html>") == "422 without a JSON detail"
    assert judge(EMPTY_QUESTION, 200, b"{}").startswith("200, expected 422")


def test_load_against_a_served_app(
    indexed_settings: Settings, services: Services, tmp_path: Path
) -> None:
    settings = _unlimited(indexed_settings)
    with serve(create_app(settings, services)) as url:
        assert app_pid_for(url) == os.getpid()  # the in-thread server listens in this process
        load = LoadTest(url, 6, 3, 1, os.getpid(), settings, log=lambda _: None)
        report = load.run(tmp_path)
    assert report["unexpected"] == 0, report["unexpected_examples"]
    assert report["roles"] == {"ask": 2, "search": 2, "bad": 2}
    by_kind = report["by_kind"]
    assert set(by_kind) <= set(EXPECTED) and {ASK, SEARCH} <= set(by_kind)
    assert set(BAD_KINDS) & set(by_kind)
    for kind, row in by_kind.items():
        assert row["statuses"] == {str(EXPECTED[kind][1]): row["requests"]}, kind
        latency = row["latency_ms"]
        assert latency["max"] >= latency["p99"] >= latency["p95"] >= latency["p50"] > 0
    assert sum(row["requests"] for row in by_kind.values()) == report["requests"]
    rss = report["rss_mb"]
    assert len(rss["samples"]) >= 3  # before, during, after
    assert rss["before"] > 0 and rss["after"] > 0 and rss["after_warmup"] is not None
    saved = json.loads((tmp_path / "load.json").read_text())
    assert len(saved["outcomes"]) == report["requests"]
    assert "| search | /search |" in (tmp_path / "load.md").read_text()
    assert (tmp_path / "load.png").read_bytes()[:4] == b"\x89PNG"


def test_load_cli_fails_when_the_app_answers_500(
    indexed_settings: Settings,
    services: Services,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("broken retrieval")

    monkeypatch.setattr(services.assistant.retriever, "search", explode)
    settings = _unlimited(indexed_settings)
    monkeypatch.setenv("SCHOLIA_SERVER_RATE_LIMIT_PER_MINUTE", "0")
    with serve(create_app(settings, services)) as url:
        result = CliRunner().invoke(
            cli,
            [
                *("eval", "load", "--url", url, "--clients", "3", "--duration", "2"),
                *("--warmup", "0", "--pid", str(os.getpid()), "--out", str(tmp_path)),
                "--no-progress",
            ],
        )
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "load.json").read_text())
    assert report["server_errors_other_than_503_504"] > 0
    assert report["by_kind"][SEARCH]["statuses"].get("500", 0) > 0
    assert "Unexpected answers:" in result.stdout


def test_load_refuses_a_remote_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        LoadTest("http://example.com:8000", pid=os.getpid())
