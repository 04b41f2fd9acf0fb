from pathlib import Path

from ingest.parse import Paper, Rejected, paper_id, read_papers


def test_bundled_corpus_has_103_papers_and_no_chrome(corpus_path: Path) -> None:
    papers = [item for item in read_papers(corpus_path) if isinstance(item, Paper)]
    assert len(papers) == 103
    assert papers[0].title.startswith("ProDiff: Progressive Fast Diffusion Model")
    assert all(len(p.abstract) > 200 for p in papers)
    titles = {p.title for p in papers}
    assert "Subscribe" not in titles and "Mar 11" not in titles
    assert len({p.id for p in papers}) == 103


def test_paper_id_is_stable_and_ignores_case_and_spacing() -> None:
    assert paper_id("ProDiff:  Progressive Fast") == paper_id("prodiff: progressive fast")
    assert paper_id("ProDiff: Progressive Fast").startswith("prodiff-progressive-fast-")
    assert paper_id("A") != paper_id("B")


def test_jsonl_records_and_rejections_name_the_line(tmp_path: Path) -> None:
    source = tmp_path / "papers.jsonl"
    source.write_text(
        '{"title": "T1", "abstract": "A1 text.", "authors": ["X", "Y"], "published": "2024"}\n'
        "\n"
        "{not json\n"
        '{"title": "T3"}\n'
        '{"title": "T4", "abstract": "A4.", "nested": {"a": 1}}\n',
        encoding="utf-8",
    )
    items = list(read_papers(source))
    assert isinstance(items[0], Paper)
    assert items[0].metadata == {"authors": "X; Y", "published": "2024"}
    rejected = [item for item in items if isinstance(item, Rejected)]
    assert [r.line for r in rejected] == [3, 4, 5]
    assert "invalid JSON" in str(rejected[0]) and str(rejected[0]).startswith(f"{source}:3:")
    assert "abstract" in rejected[1].reason


def test_content_hash_changes_with_abstract() -> None:
    a = Paper("x", "T", "One.")
    assert a.content_hash == Paper("x", "T", "One.").content_hash
    assert a.content_hash != Paper("x", "T", "Two.").content_hash
