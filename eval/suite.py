"""Evaluation suites: JSON Lines, one question per line (the fields: eval/README.md). Blank lines are
skipped; any other bad line is an error that names the file and line."""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUITES_DIR = Path(__file__).resolve().parent / "suites"
UNANSWERABLE = "unanswerable"

_TEXT_FIELDS = ("id", "question", "type")
_LIST_FIELDS = ("gold_titles", "gold_ids", "key_strings", "tags")
_KNOWN_FIELDS = {*_TEXT_FIELDS, "reference", *_LIST_FIELDS}


class SuiteError(ValueError):
    pass


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    type: str
    gold_titles: tuple[str, ...] = ()
    gold_ids: tuple[str, ...] = ()
    key_strings: tuple[str, ...] = ()
    reference: str = ""
    tags: tuple[str, ...] = ()
    line: int = 0

    @property
    def answerable(self) -> bool:  # not typed unanswerable, and something to look for
        return self.type != UNANSWERABLE and bool(self.has_gold or self.key_strings)

    @property
    def has_gold(self) -> bool:
        return bool(self.gold_titles or self.gold_ids)


@dataclass
class Suite:
    path: Path
    questions: list[Question] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem


def normalize_title(title: str) -> str:
    """Case, accents, punctuation and spacing do not matter when matching titles."""
    text = unicodedata.normalize("NFKD", title)
    text = "".join(char for char in text if not unicodedata.combining(char)).casefold()
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def load_suite(name_or_path: str | Path) -> Suite:
    """A suite file, or a bundled suite by name (`dev` → eval/suites/dev.jsonl)."""
    path = Path(name_or_path)
    if not path.is_file():
        path = SUITES_DIR / f"{name_or_path}.jsonl"
        if not path.is_file():
            raise SuiteError(f"No such suite: {name_or_path} (neither a file nor in {SUITES_DIR})")
    suite, seen = Suite(path), dict[str, int]()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise SuiteError(f"{path}: not UTF-8 text ({error})") from error
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            question = _parse(raw, f"{path}:{number}", number)
            if (first := seen.get(question.id)) is not None:
                where = f"{path}:{number}: duplicate id {question.id!r}"
                raise SuiteError(f"{where} (first at line {first})")
            seen[question.id] = number
            suite.questions.append(question)
    if not suite.questions:
        raise SuiteError(f"{path}: the suite holds no questions")
    return suite


def _parse(raw: str, where: str, number: int) -> Question:
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as error:
        why = f"{error.msg} at column {error.colno}"
        raise SuiteError(f"{where}: not valid JSON ({why})") from error
    if not isinstance(row, dict):
        raise SuiteError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if unknown := sorted(set(row) - _KNOWN_FIELDS):
        known = ", ".join(sorted(_KNOWN_FIELDS))
        raise SuiteError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {known})")
    for name in _TEXT_FIELDS:
        if not isinstance(row.get(name), str) or not row[name].strip():
            raise SuiteError(f"{where}: field {name!r} must be a non-empty string")
    if not isinstance(row.get("reference", ""), str):
        raise SuiteError(f"{where}: field 'reference' must be a string")
    for name in _LIST_FIELDS:
        value = row.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise SuiteError(f"{where}: field {name!r} must be a list of non-empty strings")
    fields: dict[str, Any] = {n: tuple(v.strip() for v in row.get(n, [])) for n in _LIST_FIELDS}
    fields |= {name: row[name].strip() for name in _TEXT_FIELDS}
    question = Question(**fields, reference=row.get("reference", "").strip(), line=number)
    if question.type == UNANSWERABLE and (question.has_gold or question.key_strings):
        raise SuiteError(
            f"{where}: an unanswerable question cannot have gold papers or key strings"
        )
    return question


def select(
    questions: list[Question],
    limit: int | None = None,
    types: list[str] | None = None,
    stratify: bool = False,
) -> list[Question]:
    """Filter by type, then keep the first `limit` (round-robin across types with `stratify`)."""
    chosen = [q for q in questions if not types or q.type in types]
    if limit is None or limit >= len(chosen) or not stratify:
        return chosen[:limit]
    # A question's round (its place among those of its type), then its type's turn in a round.
    seen: Counter[str] = Counter()
    rounds = {}
    for question in chosen:
        rounds[question.id] = seen[question.type]
        seen[question.type] += 1
    turn = {kind: i for i, kind in enumerate(seen)}
    picked = sorted(chosen, key=lambda q: (rounds[q.id], turn[q.type]))[:limit]
    return [q for q in chosen if q in picked]
