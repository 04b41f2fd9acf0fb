"""Check every sentence of a draft answer against the sources before anyone sees it.

A sentence survives when the sources support it:
- every number in it appears in a source that also mentions the sentence's subject (its first
  name-like term), so one paper's figure is never credited to another;
- it shares most of its content words with a source, or is close in meaning to one of that
  source's sentences (MiniLM cosine, computed only when the cheap word check is not enough);
- every name in it is named by the sources that support it ("FedCompass uses a gating layer",
  supported by the gating paper, credits one paper's idea to another);
- it says something: the question said back, or a bare value measuring something the question
  does not ask about ("5.7 days" for "how many GPUs?"), answers nothing.
Citations are repaired to point at the supporting sources; markers that point nowhere are
removed. An answer whose cited sources never mention a name the question asks about does not
answer it. Nothing supported → the answer is a refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process

import prompts
from assistant.pack import PackedSource
from assistant.retrieve import RetrievedPaper
from ingest.chunk import split_sentences
from ingest.embed import Embedder

CITATION = re.compile(r"\s*\[(\d+(?:\s*[,;]\s*\d+)*)\]")
NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")
WORD = re.compile(r"[^\W\d_]{4,}", re.UNICODE)
TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-+.]*[A-Za-z0-9+]|[A-Za-z0-9]")
DECLINE = re.compile(
    r"collection does not say|sources? (do|does) not (say|mention|contain|provide|specify)"
    r"|(is|are) not (mentioned|provided|specified|stated|given)|no information"
    r"|cannot (find|answer|determine)|not enough information|does not (say|mention|specify)",
    re.IGNORECASE,
)
WHICH_PAPER = re.compile(
    r"^\s*(which|what)\s+(paper|work|study|article|method|approach|model)s?\b", re.IGNORECASE
)
# Questions about several papers at once ("Compare X and Y", "Which two papers …").
SEVERAL_PAPERS = re.compile(
    r"\b(?:two|three)\s+(?:papers|works|studies|methods|approaches|ones)\b"
    r"|\bboth\s+(?:papers|works|studies|methods|approaches)\b"
    r"|\b(?:which|what)\s+(?:papers|works|studies|methods|approaches)\b"
    r"|\bcompar(?:e|ed|ing|ison)\b|\bhow do\b[^?]*\bdiffer\b|\bversus\b|\bvs\.?\s"
    r"|\bwhat does each\b",
    re.IGNORECASE,
)
# Anywhere in the question: "In the study on X, how many LLMs were tuned?" asks for a figure.
QUANTITY = re.compile(
    r"\b(how (many|much|fast|long|large|big|often)\b|by (how much|what (factor|margin|percentage))"
    r"|what (percentage|fraction|speed-?up|factor)\b"
    # "What learning rate / batch size / FID / win rate …": a measure, so a figure answers it
    r"|(what|which) ([\w-]+ ){0,2}(size|rate|length|dimension\w*|count|score|accuracy|fid"
    r"|perplexity|latency|throughput|ratio|budget)\b)",
    re.IGNORECASE,
)
NOT_FIGURES = re.compile(r"\b\d-?D\b|\(\d\)", re.IGNORECASE)  # "3D", "2-D"; the enumerator "(1)"
COUNTING = re.compile(r"\bhow many\b", re.IGNORECASE)
COUNTED = re.compile(
    r"\bhow many\s+((?:[\w-]+\s+){0,2}?[\w-]+)\s+(?:were|was|are|is|does|do|did|have|has|had"
    r"|can|could|would|will|in|on|per)\b",
    re.IGNORECASE,
)
# Figures written as words ("seven benchmark datasets", "twice as fast").
FIGURE_WORD = re.compile(
    r"\b(?:two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|dozens?|twenty|thirty"
    r"|forty|fifty|hundreds?|thousands?|millions?|billions?|half|twice|double|triple)\b",
    re.IGNORECASE,
)
# Markup in a question is data: a whole <script>/<style> element, or any other tag.
MARKUP = re.compile(
    r"<(script|style)\b[^<>]{0,200}>.{0,2000}?</\1\s*>|<[^<>]{0,200}>", re.IGNORECASE | re.DOTALL
)
NAME_MATCH_SCORE = 85  # rapidfuzz ratio: tolerates typos like "ProDif"
SENTENCE_CACHE_SIZE = 200_000
MAX_SENTENCES = 3
MIN_CLAIM_WORDS = 3  # content words below which a sentence is a fragment ("5.7 days")
STOPWORDS = frozenset(
    """this that with from which their there these those have been were what when where about
    into than then them they also such only more most other some very each both paper papers
    source sources proposes propose introduces introduce presents present uses using used
    collection study work method approach model models""".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class Verdict:
    answer: str
    citations: list[int]
    unsupported: list[int]
    declined: bool


def without_markup(question: str) -> str:
    """The question as words: tags and scripts in it are data, not what it asks."""
    return " ".join(MARKUP.sub(" ", question).split()) or question


def asks_for_figure(question: str) -> bool:
    """A question after a quantity ("how many", "what FID"); which-paper questions ask for a
    paper even when they say "based on how much compute it has"."""
    return bool(QUANTITY.search(question)) and not WHICH_PAPER.search(question)


def states_a_figure(sentence: str, counting: bool = False) -> bool:
    """A number that is a figure, not a dimension ("3D") or a list item ("(1)"). When
    `counting` ("how many …?"), a number in words ("seven datasets") is one too."""
    for name in names_in(sentence):  # "3DSeg-8", "Llama 2-7B": names, not figures
        sentence = sentence.replace(name, " ")
    sentence = NOT_FIGURES.sub(" ", sentence)
    return bool(NUMBER.search(sentence) or (counting and FIGURE_WORD.search(sentence)))


def gives_the_figure(sentence: str, question: str) -> bool:
    """The sentence states a figure of the kind asked: for "how many GPUs …?", a number of GPUs
    (in words too: "seven datasets"), not "5.7 days" or "200,000 models"."""
    if not states_a_figure(sentence, counting=bool(COUNTING.search(question))):
        return False
    counted = _counted(question)
    return not counted or bool(counted & stems({t.casefold() for t in TOKEN.findall(sentence)}))


def stems(words: set[str]) -> set[str]:
    """English stems ("sampling", "samples" → "sampl")."""
    return set(_stemmer().stemWords(sorted(words)))


@cache
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def _counted(question: str) -> set[str]:
    """What "how many …" counts ("V100 GPUs"); nothing for a factor ("how many times …")."""
    match = COUNTED.search(question)
    if match is None:
        return set()
    words = stems({word.casefold() for word in TOKEN.findall(match.group(1))})
    return set() if "time" in words else words - stems({"different", "total"})


def is_decline(text: str) -> bool:
    return bool(DECLINE.search(text))


def decline_text() -> str:
    return prompts.load("decline").strip()


def numbers_in(text: str) -> set[str]:
    return {number.replace(",", "").rstrip(".") for number in NUMBER.findall(text)}


def content_words(text: str) -> set[str]:
    return {word.casefold() for word in WORD.findall(text)} - STOPWORDS


def names_in(text: str) -> list[str]:
    return [name for _, name in _positioned_names(text)]


def _positioned_names(text: str) -> list[tuple[int, str]]:
    """Name-like terms: acronyms, CamelCase, and names with digits (MT-Bench, Mamba-2, 2080Ti)."""
    names = []
    tokens = list(TOKEN.finditer(text))
    for index, match in enumerate(tokens):
        token = match.group()
        uppers = sum(char.isupper() for char in token)
        has_digit = any(char.isdigit() for char in token)
        name_like = any(char.isalpha() for char in token) and (
            uppers >= 2 or (uppers and has_digit)
        )
        if name_like and not _shouted(tokens, index):
            names.append((match.start(), token))
    return names


def _shouted(tokens: list[re.Match[str]], index: int) -> bool:
    """Capitalised words in a row ("SYSTEM OVERRIDE", "DROP TABLE") are shouting, not names."""

    def is_word_in_capitals(i: int) -> bool:
        if not 0 <= i < len(tokens):
            return False
        token = tokens[i].group()
        return len(token) >= 4 and token.isalpha() and token.isupper()

    return is_word_in_capitals(index) and (
        is_word_in_capitals(index - 1) or is_word_in_capitals(index + 1)
    )


class SourceFacts:
    """What a packed source offers as evidence: its numbers, words and names."""

    def __init__(self, source: PackedSource) -> None:
        self.rank = source.rank
        self.text = f"{source.paper.title}. {source.text}"
        self.numbers = numbers_in(self.text)
        self.words = content_words(self.text)

    @cached_property
    def vocabulary(self) -> set[str]:
        return {_name_key(token) for token in TOKEN.findall(self.text)}

    def mentions(self, name: str) -> bool:
        key = _name_key(name)
        if key in self.vocabulary:
            return True
        if "-" in key and " ".join(key.split("-")) in self.text.casefold():
            return True  # "deep-BSDE" written "deep BSDE"
        return (
            process.extractOne(
                key, self.vocabulary, scorer=fuzz.ratio, score_cutoff=NAME_MATCH_SCORE
            )
            is not None
        )


def missing_terms(question: str, sources: list[PackedSource]) -> list[str]:
    """Names in the question that none of `sources` mentions (typos allowed): a question about
    them cannot be answered from these sources."""
    facts = [SourceFacts(source) for source in sources]
    return [name for name in names_in(question) if not any(f.mentions(name) for f in facts)]


def names_found(question: str, paper: RetrievedPaper) -> bool:
    """The question names things and the paper mentions every one of them: a confident match
    even when the embedding (English-only MiniLM) misses a question in another language."""
    return bool(names_in(question)) and not missing_terms(
        question, [PackedSource(1, paper, paper.text)]
    )


class Verifier:
    def __init__(
        self, embedder: Embedder, semantic_threshold: float, lexical_threshold: float
    ) -> None:
        self.embedder = embedder
        self.semantic_threshold = semantic_threshold
        self.lexical_threshold = lexical_threshold
        self._cache: dict[str, np.ndarray] = {}

    def check(self, draft: str, sources: list[PackedSource], question: str = "") -> Verdict:
        facts = {source.rank: SourceFacts(source) for source in sources}
        titles = {source.rank: source.paper.title for source in sources}
        sentences = split_sentences(draft.strip())
        if not sentences or not sources:
            return Verdict(decline_text(), [], list(range(len(sentences))), True)

        kept: list[str] = []
        citations: list[int] = []
        unsupported: list[int] = []
        declines = 0
        for index, sentence in enumerate(sentences):
            body = CITATION.sub("", sentence).strip()
            if is_decline(body):
                declines += 1
                continue
            cited = [rank for rank in _markers(sentence) if rank in facts]
            named = _restated_title(body, titles)
            if named is not None or not _has_content(body):
                # "[2]" alone, or a paper's title alone, answers only a which-paper question.
                paper = named if named is not None else (cited[0] if len(cited) == 1 else None)
                if paper is not None and WHICH_PAPER.search(question):
                    kept.append(f"{titles[paper]} [{paper}].")
                    citations.append(paper)
                continue
            if _unrelated_fragment(body, question) or _echoes_question(body, question):
                unsupported.append(index)
                continue
            chosen = self._support(body, [facts[rank] for rank in cited or facts])
            if chosen is None and cited:
                # The model cited the wrong source: accept another that supports the sentence.
                chosen = self._support(body, list(facts.values()))
            if chosen is None:
                unsupported.append(index)
                continue
            kept.append(body.rstrip() + " " + "".join(f"[{rank}]" for rank in chosen))
            citations.extend(chosen)

        kept = list(dict.fromkeys(kept))
        if len(kept) > MAX_SENTENCES:
            # A model that copies whole abstracts: keep the sentences closest to the question.
            asked = content_words(question) | numbers_in(question)
            order = sorted(
                range(len(kept)),
                key=lambda i: -len(asked & (content_words(kept[i]) | numbers_in(kept[i]))),
            )
            keep = sorted(order[:MAX_SENTENCES])
            kept = [kept[i] for i in keep]
            citations = [int(n) for sentence in kept for n in re.findall(r"\[(\d+)\]", sentence)]

        if not kept or (declines and not citations):
            return Verdict(decline_text(), [], unsupported, True)
        if asks_for_figure(question) and not any(
            gives_the_figure(CITATION.sub("", s), question) for s in kept
        ):
            # Asked for a quantity, answered without one: whatever it says, it is not the answer.
            return Verdict(decline_text(), [], unsupported, True)
        cited_sources = [source for source in sources if source.rank in set(citations)]
        if SEVERAL_PAPERS.search(question):
            cited_sources = sources  # each paper's part may come from its own source
        if question and not WHICH_PAPER.search(question) and missing_terms(question, cited_sources):
            # True statements about something else (APO's AlpacaEval score, for a question
            # about its MT-Bench score) do not answer the question.
            return Verdict(decline_text(), [], unsupported, True)
        return Verdict(" ".join(kept), sorted(set(citations)), unsupported, False)

    def _support(self, body: str, candidates: list[SourceFacts]) -> list[int] | None:
        """The ranks (among `candidates`) that together support `body`, or None."""
        wanted_words = content_words(body)
        overlap = {
            f.rank: len(wanted_words & f.words) / max(len(wanted_words), 1) for f in candidates
        }
        names = _positioned_names(body)
        by_number: set[int] = set()
        for match in NUMBER.finditer(body):
            number = match.group().replace(",", "").rstrip(".")
            # The figure must come from a source that mentions what it is about: the nearest
            # name before it ("APO ... 28.53%" is not SPPO's 28.53%).
            subject = next(
                (name for start, name in reversed(names) if start <= match.start()), None
            )
            owners = [
                f.rank
                for f in candidates
                if number in f.numbers and (subject is None or f.mentions(subject))
            ]
            if not owners:
                return None  # invented, or another paper's figure
            by_number.add(max(owners, key=lambda rank: overlap[rank]))
        if not wanted_words:
            return sorted(by_number) or None  # a bare value, found in the sources
        best = max(candidates, key=lambda f: overlap[f.rank])
        numbered_words = set().union(*(f.words for f in candidates if f.rank in by_number))
        chosen: set[int] | None = None
        if overlap[best.rank] >= self.lexical_threshold:
            chosen = by_number | {best.rank}
        elif by_number and len(wanted_words & numbered_words) / len(wanted_words) >= (
            self.lexical_threshold
        ):
            chosen = by_number
        else:
            compared = [f for f in candidates if f.rank in by_number] or [best]
            if self._similarity(body, compared) >= self.semantic_threshold:
                chosen = by_number | {best.rank}
        if chosen is None:
            return None
        # Whatever the sentence names must be named by its sources: "FedCompass uses a gating
        # layer", supported by the gating paper, credits one paper's idea to another.
        supporting = [f for f in candidates if f.rank in chosen]
        if any(not any(f.mentions(name) for f in supporting) for _, name in names):
            return None
        return sorted(chosen)

    def _similarity(self, body: str, candidates: list[SourceFacts]) -> float:
        sentences = [s for f in candidates for s in split_sentences(f.text)]
        return float(self.similarities(body, sentences).max()) if sentences else 0.0

    def similarities(self, text: str, sentences: list[str]) -> np.ndarray:
        """MiniLM cosine of `text` with each sentence (unit vectors: a dot product)."""
        query = np.asarray(self.embedder.embed([text])[0])
        return self._vectors(sentences) @ query

    def _vectors(self, sentences: list[str]) -> np.ndarray:
        """Source sentences recur across questions: embed each once per process."""
        missing = list(dict.fromkeys(s for s in sentences if s not in self._cache))
        if len(self._cache) + len(missing) > SENTENCE_CACHE_SIZE:
            self._cache.clear()
        for sentence, vector in zip(missing, self.embedder.embed(missing), strict=True):
            self._cache[sentence] = np.asarray(vector)
        return np.stack([self._cache[s] for s in sentences])


def _unrelated_fragment(body: str, question: str) -> bool:
    """A bare value ("5.7 days") measuring something the question does not ask about (GPUs):
    too short to be checked against the sources except by its unit."""
    words = content_words(body)
    return (
        bool(question)
        and bool(NUMBER.search(body))
        and 0 < len(words) < MIN_CLAIM_WORDS
        and not words & content_words(question)
    )


def _echoes_question(body: str, question: str) -> bool:
    """The question said back ("The study …, how many LLMs were tuned?"), adding no word, name
    or figure of its own: whatever the sources say, it answers nothing."""
    if not question:
        return False
    said, asked = _name_keys(body), _name_keys(question)
    return said <= asked and not numbers_in(body) - numbers_in(question)


def _restated_title(body: str, titles: dict[int, str]) -> int | None:
    """The rank whose title the sentence merely restates (no words beyond the title's)."""
    words = content_words(body)
    if not words:
        return None
    for rank, title in titles.items():
        if words <= content_words(title) | {"paper", "titled", "called", "named"}:
            return rank
    return None


def _name_keys(text: str) -> set[str]:
    return {_name_key(word) for word in content_words(text) | set(names_in(text))}


def _name_key(token: str) -> str:
    return token.casefold().rstrip("s")


def _markers(sentence: str) -> list[int]:
    return [int(n) for group in CITATION.findall(sentence) for n in re.split(r"[,;]", group)]


def _has_content(body: str) -> bool:
    return len(content_words(body)) >= 2 or bool(NUMBER.search(body))
