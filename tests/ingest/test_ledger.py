"""The ingest ledger: the latest time per paper wins, a line torn by a kill is skipped."""

from __future__ import annotations

from pathlib import Path

from ingest.ledger import IngestLedger


def test_the_latest_write_of_a_paper_wins_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    ledger = IngestLedger(tmp_path / "data" / "ingested.jsonl")
    assert ledger.times() == {}
    ledger.record([("a", "h1"), ("b", "h2")], at="2030-01-01T00:00:00+00:00")
    ledger.record([("a", "h3")], at="2030-01-02T00:00:00+00:00")
    ledger.record([])
    with ledger.path.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "c", "hash": "h4", "a')  # killed mid-line
    ledger.record([("d", "h5")], at="2030-01-03T00:00:00+00:00")
    assert ledger.times() == {
        "d": ("h5", "2030-01-03T00:00:00+00:00"),
        "a": ("h3", "2030-01-02T00:00:00+00:00"),
        "b": ("h2", "2030-01-01T00:00:00+00:00"),
    }
