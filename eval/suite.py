"""Evaluation suites: JSON Lines, one question per line (the fields: eval/README.md). Blank lines are
skipped; any other bad line is an error that names the file and line."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain, zip_longest
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

SUITES_DIR = Path(__file__).resolve().parent / "suites"
UNANSWERABLE = "unanswerable"
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class SuiteError(ValueError):
    pass


class Question(BaseModel):
    """One line of a suite."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    id: Text
    question: Text
    type: Text
    gold_titles: tuple[Text, ...] = ()
    gold_ids: tuple[Text, ...] = ()
    key_strings: tuple[Text, ...] = ()
    reference: Annotated[str, StringConstraints(strip_whitespace=True)] = ""
    tags: tuple[Text, ...] = ()

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
            where = f"{path}:{number}"
            question = _parse(raw, where)
            if (first := seen.get(question.id)) is not None:
                raise SuiteError(f"{where}: duplicate id {question.id!r} (first at line {first})")
            seen[question.id] = number
            suite.questions.append(question)
    if not suite.questions:
        raise SuiteError(f"{path}: the suite holds no questions")
    return suite


def _parse(raw: str, where: str) -> Question:
    try:
        question = Question.model_validate_json(raw)
    except ValidationError as error:
        # `field: message` (`key_strings.0` for an item of a list), or the message alone
        located = ((".".join(map(str, e["loc"])), e["msg"]) for e in error.errors())
        problems = "; ".join(f"{at}: {message}" if at else message for at, message in located)
        raise SuiteError(f"{where}: {problems}") from error
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
    kinds = dict.fromkeys(q.type for q in chosen)  # in the order first met
    by_type = [[q for q in chosen if q.type == kind] for kind in kinds]
    rounds = chain.from_iterable(zip_longest(*by_type))  # one of each type a round
    picked = [q for q in rounds if q is not None][:limit]
    return [q for q in chosen if q in picked]
