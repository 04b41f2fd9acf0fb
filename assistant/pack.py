"""Fit the evidence for a question into the answer prompt.

On CPU the time to the first token grows with the prompt, and the answer is one sentence: each
retrieved paper keeps its title and the sentences of its abstract closest to the question, or to
what it asks when a description of the paper comes first (MiniLM cosine, shared word stems, and a
bonus for a sentence holding the kind of thing asked: a figure, a proposed method's name), in the
abstract's own order, " … " where sentences were left out.

The top paper's best sentence goes in first, then each other paper's best, in rank order (a
paper far less relevant than the top one is left out, unless the question is about several);
the room left goes to the best remaining sentences, the top paper's first, while a lower-ranked
paper keeps at most `MAX_SENTENCES_BELOW_TOP` until nothing else fits. A name the question asks
about stays in whenever a retrieved paper mentions it (the pipeline declines a question whose
names no source mentions). Whole sentences only, except the top paper's best one when even it
does not fit alone (then it is cut between words).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import pairwise

import tiktoken

import prompts
from assistant.analyse import (
    Asks,
    QuestionAnalysis,
    analyse,
    called_by_name,
    gives_the_figure,
    names_in,
    numbers_in,
    paper_name,
    record_sentences,
    stems,
)
from assistant.analyse import (
    mentions as text_mentions,
)
from assistant.retrieve import RetrievedPaper
from ingest.chunk import split_sentences

# tiktoken counts differ from the served model's tokenizer by a few percent; keep a margin
# wherever a count must stay under the context window.
TOKENIZER_MARGIN = 0.15
ELLIPSIS = " …"  # after a sentence cut between words
OMISSION = " … "  # between two kept sentences that were not adjacent in the abstract
SOURCE_SEPARATOR = "\n\n"  # between rendered sources (as generate.answer_messages joins them)
# A sentence's relevance: its cosine with the question, plus LEXICAL_WEIGHT × the share of the
# question's word stems it has (MiniLM knows names and figures poorly), plus the bonuses below.
LEXICAL_WEIGHT = 0.5
FIGURE_BONUS = 0.3  # a quantity question, a sentence with a figure of the kind asked
ANY_FIGURE_BONUS = 0.1  # any figure: results sentences answer more questions than background
PROPOSAL_BONUS = 0.3  # a which-paper or several-paper question, "we propose …", "… called X"
NAME_BONUS = 0.1  # the same questions, a name neither the question nor the title has
# A paper whose best sentence is this much less relevant than the top paper's is left out.
DROP_MARGIN = 0.2
# Past the best sentences, the paper ranked r (from 0) competes with relevance − RANK_PENALTY × r;
# for a question about several papers they compete as equals.
RANK_PENALTY = 0.15
MAX_SENTENCES_BELOW_TOP = 2
WORD = re.compile(r"[^\W_]+(?:[-+.][^\W_]+)*")
# "we propose …", "a method called X": where a paper says what it contributes.
PROPOSES = re.compile(
    r"\b(?:we|this paper|this work|our)\s+(?:\w+\s+)?(?:propose|introduce|present|develop)\w*"
    r"|\b(?:call(?:ed)?|named|dubbed|termed|coined)\s",
    re.IGNORECASE,
)
# MiniLM cosine of a text with each of several sentences (`SentenceSimilarity`).
Similarity = Callable[[str, list[str]], Iterable[float]]


@cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base")


def count_tokens(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


@dataclass(frozen=True)
class PackedSource:
    rank: int
    paper: RetrievedPaper
    text: str  # the sentences kept, in the abstract's order, space-joined: what the verifier reads
    shown: str = ""  # `text` for a reader, " … " where sentences were left out ("": `text`)
    sentences: tuple[str, ...] = ()  # the evidence, numbered from 1 ("": `text` split)
    ranked: tuple[int, ...] = ()  # evidence numbers, most relevant to the question first
    positions: tuple[int, ...] = ()  # each kept sentence's place in the abstract (): unknown

    @property
    def by_relevance(self) -> list[str]:
        """The evidence ids, most relevant to the question first (as packing scored them)."""
        keys = list(self.evidence)
        order = [n for n in self.ranked if 0 < n <= len(keys)] or range(1, len(keys) + 1)
        return [keys[n - 1] for n in order]

    @property
    def evidence(self) -> dict[str, str]:
        """Each kept sentence under its id, "2.3" for this (rank 2) source's third."""
        sentences = self.sentences or tuple(split_sentences(self.text))
        return {f"{self.rank}.{index}": s for index, s in enumerate(sentences, start=1)}

    def render(self) -> str:
        lines = "\n".join(f"[{key}] {sentence}" for key, sentence in self.evidence.items())
        return prompts.load("source").format(rank=self.rank, title=self.paper.title, text=lines)


def render_sources(sources: Sequence[PackedSource]) -> str:
    """The sources block of the answer prompt."""
    return SOURCE_SEPARATOR.join(source.render().strip() for source in sources)


@dataclass(eq=False)  # compared by identity
class _Paper:
    paper: RetrievedPaper
    sentences: list[str]
    scores: list[float]
    kept: set[int]
    cut: str = ""  # the best sentence cut between words, when even it alone did not fit

    @property
    def best(self) -> int:
        return max(range(len(self.sentences)), key=lambda i: (self.scores[i], -i))

    def packed(self, rank: int) -> PackedSource:
        if self.cut:
            return PackedSource(rank, self.paper, self.cut, sentences=(self.cut,), ranked=(1,))
        order = sorted(self.kept)
        kept = tuple(self.sentences[index] for index in order)
        # The kept sentences' numbers (from 1), most relevant first.
        ranked = tuple(
            sorted(range(1, len(order) + 1), key=lambda n: (-self.scores[order[n - 1]], n))
        )
        if len(self.kept) == len(self.sentences):
            text = self.paper.text.strip()
            return PackedSource(
                rank, self.paper, text, sentences=kept, ranked=ranked, positions=tuple(order)
            )
        shown = self.sentences[order[0]] if order else ""
        for previous, index in pairwise(order):
            shown += (" " if index == previous + 1 else OMISSION) + self.sentences[index]
        text = " ".join(kept)
        shown = shown if shown != text else ""
        return PackedSource(rank, self.paper, text, shown, kept, ranked, tuple(order))


def pack(
    papers: list[RetrievedPaper],
    budget_tokens: int,
    question: QuestionAnalysis | str = "",
    similarity: Similarity | None = None,
) -> list[PackedSource]:
    """The sources of the answer prompt, in rank order; their rendered block (`render_sources`)
    costs at most `budget_tokens`. Without `question` every sentence is as relevant as the next
    and the leading ones are kept; without `similarity` relevance is shared word stems only."""
    analysis = analyse(question) if isinstance(question, str) else question
    entries = _score(papers, analysis, similarity)

    def fits(candidate: list[_Paper]) -> bool:
        block = render_sources([entry.packed(rank) for rank, entry in enumerate(candidate, 1)])
        return count_tokens(block) <= budget_tokens

    several = analysis.asks == Asks.COMPARISON
    chosen = _best_sentences(entries, several, fits)
    if not chosen or chosen[0].cut:
        return [entry.packed(rank) for rank, entry in enumerate(chosen, 1)]
    chosen = _keep_names(analysis, entries, chosen, fits)
    _fill(chosen, several, fits)
    return [entry.packed(rank) for rank, entry in enumerate(chosen, 1)]


def _best_sentences(
    entries: list[_Paper], several: bool, fits: Callable[[list[_Paper]], bool]
) -> list[_Paper]:
    """Every paper's best sentence, in rank order, while they fit; unless the question compares
    `several` papers, none much less relevant than the top paper's. When not even the first
    paper's best sentence fits, it is cut between words to fit."""
    chosen: list[_Paper] = []
    for entry in entries:
        if not entry.sentences:
            continue
        if (
            chosen
            and not several
            and entry.scores[entry.best] < chosen[0].scores[chosen[0].best] - DROP_MARGIN
        ):
            continue
        entry.kept = {entry.best}
        if fits([*chosen, entry]):
            chosen.append(entry)
        elif not chosen and _cut_to_fit(entry, fits):
            chosen = [entry]
        else:
            entry.kept = set()
    return chosen


def _fill(chosen: list[_Paper], several: bool, fits: Callable[[list[_Paper]], bool]) -> None:
    """The room left: the best remaining sentences, the top paper's favoured."""
    penalty = 0.0 if several else RANK_PENALTY
    queue = sorted(
        (
            (entry.scores[index] - penalty * position, -position, -index, position, index)
            for position, entry in enumerate(chosen)
            for index in range(len(entry.sentences))
            if index not in entry.kept
        ),
        reverse=True,
    )
    for capped in (True, False):  # lower-ranked papers grow past their cap only once all else fits
        for *_, position, index in queue:
            entry = chosen[position]
            if index in entry.kept or (
                capped and position and len(entry.kept) >= MAX_SENTENCES_BELOW_TOP
            ):
                continue
            entry.kept.add(index)
            if not fits(chosen):
                entry.kept.discard(index)


def _score(
    papers: list[RetrievedPaper], analysis: QuestionAnalysis, similarity: Similarity | None
) -> list[_Paper]:
    """Each paper's sentences and their relevance to the question (one embedding batch per
    query: the question, and what it asks when a description of the paper comes first)."""
    entries = [
        _Paper(
            paper,
            split_sentences(paper.text) + record_sentences(paper.metadata, analysis),
            [],
            set(),
        )
        for paper in papers
    ]
    flat = [sentence for entry in entries for sentence in entry.sentences]
    queries = [analysis.text, analysis.focus] if analysis.focus else [analysis.text]
    cosines = [[0.0] * len(flat) for _ in queries]
    if analysis.text and flat and similarity is not None:
        cosines = [[float(value) for value in similarity(query, flat)] for query in queries]
    stemmed = [_stems(query) for query in queries]
    evidence = _evidence(analysis)
    start = 0
    for position, entry in enumerate(entries):
        bonus = evidence(entry.paper)
        # What is asked apart from the description counts in the paper the description finds
        # (the first retrieved) only: in the others it favours sentences on the same point.
        used = range(len(queries) if position == 0 else 1)
        for offset, sentence in enumerate(entry.sentences):
            words = _stems(sentence)
            relevance = max(
                cosines[q][start + offset]
                + LEXICAL_WEIGHT * (len(stemmed[q] & words) / len(stemmed[q]) if stemmed[q] else 0)
                for q in used
            )
            entry.scores.append(relevance + bonus(sentence))
        start += len(entry.sentences)
    return entries


def _evidence(analysis: QuestionAnalysis) -> Callable[[RetrievedPaper], Callable[[str], float]]:
    """A bonus for sentences that hold what the question asks for, not merely its topic:
    the figure a quantity question asks for; what a paper proposes, and the names it gives,
    when the question asks which paper or about several."""
    wants_name = analysis.asks in (Asks.WHICH_PAPER, Asks.COMPARISON)
    known = {name.casefold() for name in analysis.names}

    def for_paper(paper: RetrievedPaper) -> Callable[[str], float]:
        titled = known | {name.casefold() for name in names_in(paper.title)}

        def bonus(sentence: str) -> float:
            value = 0.0
            if analysis.wants_figure and gives_the_figure(sentence, analysis):
                value += FIGURE_BONUS
            elif numbers_in(sentence):
                value += ANY_FIGURE_BONUS
            if wants_name:
                if PROPOSES.search(sentence):
                    value += PROPOSAL_BONUS
                if any(n.casefold() not in titled for n in names_in(sentence)):
                    value += NAME_BONUS
            return value

        return bonus

    return for_paper


def _keep_names(
    analysis: QuestionAnalysis,
    entries: list[_Paper],
    chosen: list[_Paper],
    fits: Callable[[list[_Paper]], bool],
) -> list[_Paper]:
    """A name the question asks about ("ProDiff", "ImageNet") that a retrieved paper mentions
    stays in the prompt, as that paper's best sentence naming it (any, when its title names it):
    the pipeline declines a question whose names no source mentions."""

    def mentions(entry: _Paper, text: str, name: str) -> bool:
        return text_mentions(f"{entry.paper.title}. {text}", name)

    own = (
        (
            paper_name(entry.paper.title, entry.paper.text),
            f"{entry.paper.title}. {entry.paper.text}",
        )
        for entry in entries
    )
    # A paper the question calls by its name in words ("explained variance adaptation" for
    # EVA) stays too: the answer must come from it, not from a paper beside it.
    for name in [*analysis.names, *called_by_name(analysis.text, own)]:
        if any(mentions(entry, entry.packed(1).text, name) for entry in chosen):
            continue
        for entry in entries:
            naming = [
                index
                for index, sentence in enumerate(entry.sentences)
                if index not in entry.kept and mentions(entry, sentence, name)
            ]
            if entry not in chosen and entry.sentences and mentions(entry, "", name):
                naming = [entry.best]  # its title names it: the paper's best sentence will do
            if not naming:
                continue
            added = max(naming, key=lambda index: (entry.scores[index], -index))
            trial = [other for other in entries if other in chosen or other is entry]
            entry.kept.add(added)
            if fits(trial):
                chosen = trial
                break
            entry.kept.discard(added)
    return chosen


def _cut_to_fit(entry: _Paper, fits: Callable[[list[_Paper]], bool]) -> bool:
    """Cut the best sentence between words to the most that fits; False if not even a word does."""
    words = entry.sentences[entry.best].split()
    low, high = 0, len(words) - 1  # the most words that fit, with an ellipsis after them
    while low < high:
        middle = (low + high + 1) // 2
        entry.cut = " ".join(words[:middle]) + ELLIPSIS
        if fits([entry]):
            low = middle
        else:
            high = middle - 1
    entry.cut = " ".join(words[:low]) + ELLIPSIS if low else ""
    return bool(low)


def _stems(text: str) -> set[str]:
    """Content word stems of `text`, case-folded ("Sampling", "samples" → "sampl")."""
    words = {word.casefold() for word in WORD.findall(text)}
    parts = {part for word in words for part in re.split(r"[-+.]", word)}
    return stems((words | parts) - _stopwords())


@cache
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    return frozenset(STOPWORDS_EN_PLUS) | {""}
