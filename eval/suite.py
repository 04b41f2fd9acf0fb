"""Evaluation suites: JSON Lines, one question per line.

Fields: `id` (unique), `question`, `type` (fact, which_paper, multi_paper, adversarial,
unanswerable, or any label), `gold_titles` and/or `gold_ids` (the papers that answer it; empty for
an unanswerable question), `key_strings` (all must appear in a correct answer), `reference` (a
reference answer), `tags`. Blank lines are skipped; any other bad line is an error that names the
file and line.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUITES_DIR = Path(__file__).resolve().parent / "suites"
UNANSWERABLE = "unanswerable"

_LIST_FIELDS = ("gold_titles", "gold_ids", "key_strings", "tags")
_KNOWN_FIELDS = {"id", "type", "question", "reference", *_LIST_FIELDS}


class SuiteError(ValueError):
    """A suite file that cannot be used; the message names the file and line."""


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
    def answerable(self) -> bool:
        """Unanswerable: typed so, or no gold paper and no key string to look for."""
        if self.type == UNANSWERABLE:
            return False
        return bool(self.gold_titles or self.gold_ids or self.key_strings)

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

    def types(self) -> list[str]:
        return list(dict.fromkeys(q.type for q in self.questions))


def normalize_title(title: str) -> str:
    """Case, accents, punctuation and spacing do not matter when matching titles."""
    text = unicodedata.normalize("NFKD", title)
    text = "".join(char for char in text if not unicodedata.combining(char)).casefold()
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def resolve_suite(name_or_path: str | Path) -> Path:
    """A path to a file, or the name of a bundled suite (`dev` → eval/suites/dev.jsonl)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = SUITES_DIR / f"{name_or_path}.jsonl"
    if bundled.is_file():
        return bundled
    raise SuiteError(f"No such suite: {name_or_path} (neither a file nor a suite in {SUITES_DIR})")


def load_suite(name_or_path: str | Path) -> Suite:
    path = resolve_suite(name_or_path)
    suite = Suite(path)
    seen: dict[str, int] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SuiteError(f"{path}: not UTF-8 text ({error})") from error
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        question = parse_line(raw, path, number)
        if question.id in seen:
            raise SuiteError(
                f"{path}:{number}: duplicate id {question.id!r} (first at line {seen[question.id]})"
            )
        seen[question.id] = number
        suite.questions.append(question)
    if not suite.questions:
        raise SuiteError(f"{path}: the suite holds no questions")
    return suite


def parse_line(raw: str, path: Path, number: int) -> Question:
    where = f"{path}:{number}"
    try:
        row: Any = json.loads(raw)
    except json.JSONDecodeError as error:
        raise SuiteError(
            f"{where}: not valid JSON ({error.msg} at column {error.colno})"
        ) from error
    if not isinstance(row, dict):
        raise SuiteError(f"{where}: expected a JSON object, got {type(row).__name__}")
    unknown = sorted(set(row) - _KNOWN_FIELDS)
    if unknown:
        raise SuiteError(
            f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(_KNOWN_FIELDS))})"
        )
    for name in ("id", "question", "type"):
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            raise SuiteError(f"{where}: field {name!r} must be a non-empty string")
    if not isinstance(row.get("reference", ""), str):
        raise SuiteError(f"{where}: field 'reference' must be a string")
    lists: dict[str, tuple[str, ...]] = {}
    for name in _LIST_FIELDS:
        value = row.get(name, [])
        if not isinstance(value, list) or not all(
            isinstance(item, str) and item.strip() for item in value
        ):
            raise SuiteError(f"{where}: field {name!r} must be a list of non-empty strings")
        lists[name] = tuple(item.strip() for item in value)
    question = Question(
        id=row["id"].strip(),
        question=row["question"].strip(),
        type=row["type"].strip(),
        reference=row.get("reference", "").strip(),
        line=number,
        **lists,
    )
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
    if limit is None or limit >= len(chosen):
        return chosen
    if not stratify:
        return chosen[:limit]
    by_type: dict[str, list[Question]] = {}
    for question in chosen:
        by_type.setdefault(question.type, []).append(question)
    picked: list[Question] = []
    index = 0
    while len(picked) < limit:
        for group in by_type.values():
            if index < len(group) and len(picked) < limit:
                picked.append(group[index])
        index += 1
    order = {q.id: i for i, q in enumerate(chosen)}
    return sorted(picked, key=lambda q: order[q.id])
