"""`scholia ingest` through its command line (in-process; the model is the session's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.pipeline import ingest_lock
from scholia.settings import get_settings
from tests.ingest.helpers import cli_ingest as _cli
from tests.ingest.helpers import make_settings, paper_records, snapshot, write_jsonl


def test_malformed_lines_are_named_the_rest_ingested_and_the_exit_code_says_so(
    data_dir: Path, tmp_path: Path
) -> None:
    good = paper_records(3)
    source = tmp_path / "mixed.jsonl"
    lines = [
        write_jsonl(tmp_path / "a.jsonl", [good[0]]).read_text(),
        "{this is not json\n",
        write_jsonl(tmp_path / "b.jsonl", [good[1]]).read_text(),
        '{"title": "No abstract here"}\n',
        '["a", "list"]\n',
        write_jsonl(tmp_path / "c.jsonl", [good[2]]).read_text(),
        '{"title": "T", "abstract": "A.", "paper_hash": "spoof"}\n',
    ]
    source.write_text("".join(lines), encoding="utf-8")
    result = _cli(source)
    assert result.exit_code == 1, result.output
    assert f"rejected {source}:2: invalid JSON" in result.stdout
    assert f"rejected {source}:4: missing or empty string field 'abstract'" in result.stdout
    assert f"rejected {source}:5: expected a JSON object" in result.stdout
    assert f"rejected {source}:7: field name 'paper_hash' is reserved" in result.stdout
    assert "added 3, updated 0, unchanged 0, removed 0, rejected 4" in result.stdout
    assert "4 records rejected" in result.stderr
    titles = {m["title"] for m in snapshot(make_settings(data_dir))[2]}
    assert titles == {record["title"] for record in good}


def test_missing_file_fails_before_touching_the_index(data_dir: Path, tmp_path: Path) -> None:
    present = write_jsonl(tmp_path / "p.jsonl", paper_records(1))
    result = _cli(present, tmp_path / "nope.jsonl")
    assert result.exit_code == 2
    assert f"No such corpus file: {tmp_path / 'nope.jsonl'}" in result.stderr
    assert not (data_dir / "chroma").exists()


def test_a_second_ingest_on_the_same_data_dir_is_refused(data_dir: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "p.jsonl", paper_records(1))
    with ingest_lock(data_dir):
        result = _cli(source)
    assert result.exit_code == 2
    assert "Another `scholia ingest` is running on this data directory" in result.stderr
    assert not (data_dir / "chroma").exists()
    assert _cli(source).exit_code == 0  # the lock goes with its holder


def test_mismatch_names_the_difference_and_rebuild_fixes_it(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_jsonl(tmp_path / "p.jsonl", paper_records(2))
    assert _cli(source).exit_code == 0
    monkeypatch.setenv("SCHOLIA_CHUNKING_OVERLAP_TOKENS", "0")
    get_settings.cache_clear()
    refused = _cli(source)
    assert refused.exit_code == 2
    assert "chunk_overlap_tokens: index has 32, settings give 0" in refused.stderr
    assert "scholia ingest --rebuild" in refused.stderr
    rebuilt = _cli("--rebuild", source)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "added 2" in rebuilt.stdout
    again = _cli(source)
    assert again.exit_code == 0 and "unchanged 2" in again.stdout


def test_an_address_without_the_ray_engine_is_refused(data_dir: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "p.jsonl", paper_records(1))
    result = _cli("--address", "127.0.0.1:6379", source)
    assert result.exit_code == 2
    assert "--address needs --engine ray" in result.stderr
    assert not (data_dir / "chroma").exists()
