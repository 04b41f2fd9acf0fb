"""Read papers from the bundled page format (title line, abstract line) or from JSON Lines."""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

# An abstract is a long prose line; page chrome ("Subscribe", dates) and titles are short.
MIN_ABSTRACT_CHARS = 200
MAX_TITLE_CHARS = 300
METADATA_SCALARS = (str, int, float, bool)
# Metadata keys Scholia and LlamaIndex set on every chunk; a source record may not use them.
RESERVED_METADATA = frozenset(
    {"paper_id", "title", "chunk_index", "paper_hash", "paper_chunks"}
    | {"_node_content", "_node_type", "document_id", "doc_id", "ref_doc_id"}
)
INT64 = 2**63


@dataclass(frozen=True)
class Paper:
    id: str
    title: str
    abstract: str
    metadata: dict[str, str | int | float | bool] = field(default_factory=dict)
    source: str = ""
    line: int = 0

    @cached_property
    def content_hash(self) -> str:
        payload = json.dumps(
            [self.title, self.abstract, sorted(self.metadata.items())], ensure_ascii=False
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Rejected:
    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


def normalize_title(title: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", title).casefold().split())


def paper_id(title: str) -> str:
    """A stable, readable id: a slug of the title's first words plus a hash of the whole title."""
    normalized = normalize_title(title)
    slug = re.sub(r"[^a-z0-9]+", "-", normalized).strip("-")
    slug = "-".join(slug.split("-")[:6])[:48].strip("-") or "paper"
    digest = hashlib.sha1(normalized.encode("utf-8")).hexdigest()[:8]
    return f"{slug}-{digest}"


def read_papers(path: Path) -> Iterator[Paper | Rejected]:
    """Papers in file order; malformed records come out as `Rejected` naming file and line."""
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        yield from _read_jsonl(path)
    else:
        yield from _read_pages(path)


def _read_pages(path: Path) -> Iterator[Paper | Rejected]:
    lines = [
        (number, line.strip())
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if line.strip()
    ]
    index = 0
    while index < len(lines) - 1:
        title_line, title = lines[index]
        _, abstract = lines[index + 1]
        if len(title) <= MAX_TITLE_CHARS and len(abstract) >= MIN_ABSTRACT_CHARS:
            yield Paper(
                id=paper_id(title),
                title=title,
                abstract=abstract,
                source=str(path),
                line=title_line,
            )
            index += 2
        else:
            index += 1  # page chrome or a title without abstract


def _read_jsonl(path: Path) -> Iterator[Paper | Rejected]:
    with path.open("rb") as handle:
        for number, raw_bytes in enumerate(handle, start=1):
            try:
                raw = raw_bytes.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                yield Rejected(str(path), number, f"not UTF-8 text ({error.reason})")
                continue
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, RecursionError) as error:
                message = (
                    error.msg if isinstance(error, json.JSONDecodeError) else "too deeply nested"
                )
                yield Rejected(str(path), number, f"invalid JSON: {message}")
                continue
            yield _paper_from_record(record, str(path), number)


def _paper_from_record(record: Any, source: str, line: int) -> Paper | Rejected:
    if not isinstance(record, dict):
        return Rejected(source, line, "expected a JSON object")
    title, abstract = record.get("title"), record.get("abstract")
    for name, value in (("title", title), ("abstract", abstract)):
        if not isinstance(value, str) or not value.strip():
            return Rejected(source, line, f"missing or empty string field '{name}'")
    assert isinstance(title, str) and isinstance(abstract, str)
    given_id = record.get("id")
    if given_id is not None and (not isinstance(given_id, str) or not given_id.strip()):
        return Rejected(source, line, "field 'id' must be a non-empty string")
    metadata: dict[str, str | int | float | bool] = {}
    for key, value in record.items():
        if key in {"id", "title", "abstract"} or value is None:
            continue
        if key in RESERVED_METADATA or not key or key.startswith(("$", "chroma:")):
            return Rejected(source, line, f"field name '{key}' is reserved")
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            metadata[key] = "; ".join(value)
        elif isinstance(value, float) and not math.isfinite(value):
            return Rejected(source, line, f"field '{key}' must be a finite number")
        elif isinstance(value, int) and not -INT64 <= value < INT64:
            return Rejected(source, line, f"field '{key}' is out of the 64-bit integer range")
        elif isinstance(value, METADATA_SCALARS):
            metadata[key] = value
        else:
            return Rejected(
                source, line, f"field '{key}' must be a string, number, or list of strings"
            )
    return Paper(
        id=given_id.strip() if isinstance(given_id, str) else paper_id(title),
        title=" ".join(title.split()),
        abstract=" ".join(abstract.split()),
        metadata=metadata,
        source=source,
        line=line,
    )
