"""Split a paper into chunks that fit the embedder: title first in every chunk, whole sentences."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ingest.parse import Paper

# A sentence ends at . ! or ? followed by space and an upper-case letter, digit or quote;
# "e.g. the" and "Fig. 3" style abbreviations mostly survive because of the lower-case/space rule.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
# [CLS] and [SEP] around every sequence the embedder reads.
SPECIAL_TOKENS = 2

TokenCounter = Callable[[str], int]
BatchTokenCounter = Callable[[list[str]], list[int]]


@dataclass(frozen=True)
class Chunk:
    paper_id: str
    index: int
    text: str  # what is embedded and shown: "title\nsentences…"
    passage: str  # the abstract part only (whole sentences)
    n_tokens: int

    @property
    def id(self) -> str:
        return f"{self.paper_id}#{self.index}"


def split_sentences(text: str) -> list[str]:
    return [part.strip() for part in SENTENCE_END.split(text) if part.strip()]


def chunk_paper(
    paper: Paper,
    count_tokens: TokenCounter,
    max_tokens: int = 256,
    overlap_tokens: int = 32,
    count_many: BatchTokenCounter | None = None,
) -> list[Chunk]:
    """Greedy sentence packing under `max_tokens` (special tokens included), with sentence overlap.

    With `count_many` (one tokenizer call for many texts) the sentences are counted once and
    a group's count is the sum of its sentences' counts, which is exact for WordPiece (a space
    is a hard token boundary); the finished chunks are counted for real, and if any runs over
    (another kind of tokenizer) the paper is packed again the slow, exact way.
    """
    if count_many is not None:
        chunks = _chunk_by_sums(paper, count_many, max_tokens, overlap_tokens)
        if chunks is not None:
            return chunks
    return _chunk_exact(paper, count_tokens, max_tokens, overlap_tokens)


def _chunk_by_sums(
    paper: Paper, count_many: BatchTokenCounter, max_tokens: int, overlap_tokens: int
) -> list[Chunk] | None:
    header = paper.title + "\n"
    sentences = split_sentences(paper.abstract)
    header_tokens, *counts = count_many([header, *sentences])
    budget = max_tokens - SPECIAL_TOKENS - header_tokens
    if budget < 16 or any(count > budget for count in counts):
        return None  # the exact path raises or splits sentences between words
    groups: list[list[tuple[str, int]]] = []
    current: list[tuple[str, int]] = []
    for piece in zip(sentences, counts, strict=True):
        if current and sum(tokens for _, tokens in current) + piece[1] > budget:
            groups.append(current)
            current = _overlap_tail(current, overlap_tokens, budget - piece[1])
            while current and sum(tokens for _, tokens in current) + piece[1] > budget:
                current.pop(0)
        current.append(piece)
    if current:
        groups.append(current)
    passages = [" ".join(text for text, _ in group) for group in groups]
    texts = [header + passage for passage in passages]
    real = count_many(texts)
    if any(tokens + SPECIAL_TOKENS > max_tokens for tokens in real):
        return None
    return [
        Chunk(paper.id, index, text, passage, tokens + SPECIAL_TOKENS)
        for index, (text, passage, tokens) in enumerate(zip(texts, passages, real, strict=True))
    ]


def _chunk_exact(
    paper: Paper, count_tokens: TokenCounter, max_tokens: int, overlap_tokens: int
) -> list[Chunk]:
    header = paper.title + "\n"
    budget = max_tokens - SPECIAL_TOKENS - count_tokens(header)
    if budget < 16:
        raise ValueError(f"title of {paper.id!r} leaves no room in a {max_tokens}-token chunk")
    pieces: list[tuple[str, int]] = []
    for sentence in split_sentences(paper.abstract):
        pieces.extend(_fit_sentence(sentence, count_tokens, budget))

    chunks: list[list[tuple[str, int]]] = []
    current: list[tuple[str, int]] = []
    for piece in pieces:
        if current and _joined_tokens([*current, piece], count_tokens) > budget:
            chunks.append(current)
            current = _overlap_tail(current, overlap_tokens, budget - piece[1])
            while current and _joined_tokens([*current, piece], count_tokens) > budget:
                current.pop(0)
        current.append(piece)
    if current:
        chunks.append(current)

    result = []
    for index, group in enumerate(chunks):
        passage = " ".join(text for text, _ in group)
        text = header + passage
        result.append(Chunk(paper.id, index, text, passage, count_tokens(text) + SPECIAL_TOKENS))
    return result


def _joined_tokens(group: list[tuple[str, int]], count_tokens: TokenCounter) -> int:
    return count_tokens(" ".join(text for text, _ in group))


def _overlap_tail(
    group: list[tuple[str, int]], overlap_tokens: int, room: int
) -> list[tuple[str, int]]:
    """The last sentences of the previous chunk, at most `overlap_tokens`, that leave room."""
    tail: list[tuple[str, int]] = []
    used = 0
    for text, tokens in reversed(group):
        if used + tokens > min(overlap_tokens, room):
            break
        tail.insert(0, (text, tokens))
        used += tokens
    return tail


def _fit_sentence(sentence: str, count_tokens: TokenCounter, budget: int) -> list[tuple[str, int]]:
    """A sentence longer than the budget is split between words (the only mid-sentence cut)."""
    tokens = count_tokens(sentence)
    if tokens <= budget:
        return [(sentence, tokens)]
    parts: list[tuple[str, int]] = []
    words: list[str] = []
    for word in sentence.split():
        candidate = " ".join([*words, word])
        if words and count_tokens(candidate) > budget:
            text = " ".join(words)
            parts.append((text, count_tokens(text)))
            words = [word]
        else:
            words.append(word)
    if words:
        text = " ".join(words)
        parts.append((text, count_tokens(text)))
    return parts
