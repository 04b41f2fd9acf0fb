from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.suite import SUITES_DIR, SuiteError, load_suite, select
from ingest.parse import Paper, normalize_title, read_papers
from scholia.settings import BUNDLED_CORPUS

GOOD = {
    "id": "a1",
    "type": "fact",
    "question": "What is X?",
    "gold_titles": ["Paper X"],
    "key_strings": ["42"],
    "reference": "X is 42.",
    "tags": ["t"],
}


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "suite.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_dev_suite_loads() -> None:
    suite = load_suite("dev")
    assert suite.path == SUITES_DIR / "dev.jsonl"
    assert len(suite.questions) == 104
    assert {q.type for q in suite.questions} == {
        "fact",
        "which_paper",
        "multi_paper",
        "unanswerable",
        "adversarial",
    }
    unanswerable = [q for q in suite.questions if q.type == "unanswerable"]
    assert unanswerable and not any(q.answerable for q in unanswerable)
    assert all(q.answerable for q in suite.questions if q.type != "unanswerable")


def test_blank_lines_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, [json.dumps(GOOD), "", json.dumps({**GOOD, "id": "a2"})])
    suite = load_suite(path)
    assert [q.id for q in suite.questions] == ["a1", "a2"]
    assert suite.questions[0].gold_titles == ("Paper X",)
    spaced = {**GOOD, "id": " a3 ", "tags": [" t "]}
    assert load_suite(write(tmp_path, [json.dumps(spaced)])).questions[0].tags == ("t",)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "Invalid JSON"),
        ("[1, 2]", "Input should be an object"),
        (json.dumps({**GOOD, "question": ""}), "question: String should have at least 1"),
        (json.dumps({**GOOD, "tags": [" "]}), "tags.0: String should have at least 1"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "type"}), "type: Field required"),
        (json.dumps({**GOOD, "gold_titles": "Paper X"}), "gold_titles: Input should be a valid"),
        (json.dumps({**GOOD, "key_strings": [1]}), "key_strings.0: Input should be a valid str"),
        (json.dumps({**GOOD, "golds": []}), "golds: Extra inputs are not permitted"),
        (json.dumps({**GOOD, "type": "unanswerable"}), "unanswerable question cannot"),
        (json.dumps({**GOOD, "reference": 3}), "reference: Input should be a valid string"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, bad: str, message: str) -> None:
    path = write(tmp_path, [json.dumps(GOOD), "", bad])
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    assert f"{path}:3:" in str(error.value)
    assert message in str(error.value)


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, [json.dumps(GOOD), json.dumps(GOOD)])
    with pytest.raises(SuiteError, match=r":2: duplicate id 'a1' \(first at line 1\)"):
        load_suite(path)


def test_missing_and_empty_suites(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="No such suite"):
        load_suite(tmp_path / "nope.jsonl")
    with pytest.raises(SuiteError, match="no questions"):
        load_suite(write(tmp_path, [""]))


def test_gold_ids_only_is_answerable(tmp_path: Path) -> None:
    row = {"id": "b", "type": "fact", "question": "Q?", "gold_ids": ["paper-1"]}
    question = load_suite(write(tmp_path, [json.dumps(row)])).questions[0]
    assert question.answerable and question.has_gold


def test_select_limit_types_and_stratify() -> None:
    questions = load_suite("dev").questions
    assert [q.id for q in select(questions, 3)] == [q.id for q in questions[:3]]
    assert {q.type for q in select(questions, None, ["unanswerable"])} == {"unanswerable"}
    balanced = select(questions, 5, stratify=True)
    assert len(balanced) == 5
    assert len({q.type for q in balanced}) == 5


@pytest.mark.parametrize("name", ["dev", "holdout", "paraphrase", "frozen"])
def test_bundled_suite_matches_the_bundled_corpus(name: str) -> None:
    """Gold titles exist, and a one-paper question's key strings are in that paper's abstract."""
    papers = {
        normalize_title(paper.title): paper.abstract
        for paper in read_papers(BUNDLED_CORPUS)
        if isinstance(paper, Paper)
    }
    for question in load_suite(name).questions:
        for title in question.gold_titles:
            assert normalize_title(title) in papers, f"{question.id}: no paper {title!r}"
        if question.type in {"fact", "which_paper"} and len(question.gold_titles) == 1:
            abstract = papers[normalize_title(question.gold_titles[0])].casefold()
            for key in question.key_strings:
                assert key.casefold() in abstract, f"{question.id}: {key!r} not in its abstract"
