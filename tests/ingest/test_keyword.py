"""The BM25 index on disk: versioned folders behind one symlink, deterministic bytes."""

from __future__ import annotations

import os
from pathlib import Path

from ingest.keyword import KeywordIndex

ROWS = [
    ("b#0", "Diffusion models sample images by denoising.", "hb"),
    ("a#0", "Sparse attention cuts the cost of long sequences.", "ha"),
    ("a#1", "Attention heads can be pruned after training.", "ha"),
]


def test_same_content_gives_the_same_bytes_in_any_order(tmp_path: Path) -> None:
    one, two = KeywordIndex(tmp_path / "one" / "bm25"), KeywordIndex(tmp_path / "two" / "bm25")
    assert one.build_from(ROWS) == two.build_from(list(reversed(ROWS)))
    assert one.files_digest() == two.files_digest() is not None
    assert one.state() == two.state()
    assert one.search("pruned attention heads", 2)[0].chunk_id == "a#1"


def test_rebuild_switches_versions_and_readers_follow(tmp_path: Path) -> None:
    folder = tmp_path / "bm25-papers-local"
    index = KeywordIndex(folder)
    index.build_from(ROWS)
    reader = KeywordIndex(folder)
    assert reader.search("denoising", 3)[0].chunk_id == "b#0"
    first = os.readlink(folder)

    # leftovers of a build killed before its switch
    (tmp_path / ".bm25-papers-local.vdead-1").mkdir()
    (tmp_path / ".bm25-papers-local.link-1").symlink_to(".bm25-papers-local.vdead-1")
    index.build_from([("c#0", "Quantized transformers run on small devices.", "hc")])
    assert folder.is_symlink() and os.readlink(folder) != first
    assert reader.search("denoising", 3) == []
    assert reader.search("quantized devices", 3)[0].chunk_id == "c#0"
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == sorted(["bm25-papers-local", first, os.readlink(folder)])  # previous kept

    index.remove()
    assert list(tmp_path.iterdir()) == []
    assert reader.search("quantized", 3) == []


def test_a_plain_folder_from_the_old_layout_is_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "bm25-papers-local"
    folder.mkdir()
    (folder / "state.json").write_text('{"fingerprint": "old", "chunks": 0}')
    index = KeywordIndex(folder)
    index.build_from(ROWS)
    assert folder.is_symlink()
    state = index.state()
    assert state is not None and state["chunks"] == 3
