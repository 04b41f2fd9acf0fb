"""Fit the retrieved papers into the model's context window, whole sentences only."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import tiktoken

import prompts
from assistant.retrieve import RetrievedPaper
from ingest.chunk import split_sentences

# tiktoken counts differ from the served model's tokenizer by a few percent; keep a margin.
TOKENIZER_MARGIN = 0.15
ELLIPSIS = " …"


@cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base")


def count_tokens(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


@dataclass(frozen=True)
class PackedSource:
    rank: int
    paper: RetrievedPaper
    text: str  # what the model sees (possibly shortened at a sentence boundary)

    def render(self) -> str:
        return prompts.load("source").format(rank=self.rank, title=self.paper.title, text=self.text)


def pack(papers: list[RetrievedPaper], budget_tokens: int) -> list[PackedSource]:
    """Sources in rank order while they fit; a source that does not fit whole keeps its leading
    sentences and says so with an ellipsis; one that cannot keep a single sentence is dropped."""
    budget = int(budget_tokens * (1 - TOKENIZER_MARGIN))
    packed: list[PackedSource] = []
    used = 0
    for paper in papers:
        rank = len(packed) + 1
        whole = PackedSource(rank, paper, paper.text)
        cost = count_tokens(whole.render())
        if used + cost <= budget:
            packed.append(whole)
            used += cost
            continue
        kept: list[str] = []
        for sentence in split_sentences(paper.text):
            trial = PackedSource(rank, paper, " ".join([*kept, sentence]) + ELLIPSIS)
            if used + count_tokens(trial.render()) > budget:
                break
            kept.append(sentence)
        if kept:
            shortened = PackedSource(rank, paper, " ".join(kept) + ELLIPSIS)
            packed.append(shortened)
            used += count_tokens(shortened.render())
        break  # later (lower-ranked) sources would not fit either
    return packed
