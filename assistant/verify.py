"""Check each claim of a draft against the evidence it cites, then the steps after generation.

A claim survives when its cited evidence supports it:
- every figure in it is in a cited sentence (or another sentence of a cited paper), so one
  paper's figure is never credited to another;
- every name in it is named by a cited paper, a paper's own name spelt out too ("accelerated
  preference optimization" names APO), so a figure is never credited to a paper it names;
- it says what its evidence says: close in meaning (MiniLM cosine) or in words.
A claim whose wording fails while the evidence it cites is on point (close to the question, with
the figure or names asked for) is answered with that evidence itself, first the sentence that
holds what the claim adds to the question it says back; never the sentence a description before
the question says back ("In the work showing that …, which …?"), which is how the asker found the
paper, not what they ask. Then an ordered list of
steps `(verdict, analysis, evidence) → verdict` runs: quote the evidence when the model declined
but the evidence answers; decline what does not answer the question; cover each paper of a
comparison (where the question says what it measures, from where each paper gives it); correct
a false premise; answer a which-paper question with the best retrieved paper, not the
neighbour a small model names; name the papers (and what they call their method).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from itertools import pairwise

import numpy as np

import prompts
from assistant.analyse import (
    FUNCTION_WORDS,
    INSTRUCTION,
    NON_LATIN,
    RECORD,
    TOKEN,
    Asks,
    QuestionAnalysis,
    beside_figures,
    called_by_name,
    direction_of,
    from_the_record,
    gives_the_figure,
    introduces,
    is_question,
    mentions,
    missing_names,
    names_in,
    numbers_in,
    paper_name,
    proper_names,
    short_forms,
    states_a_figure,
    stems,
    whole_phrase,
    word_stems,
)
from assistant.generate import Draft
from assistant.pack import PackedSource
from assistant.similarity import SentenceSimilarity
from ingest.chunk import split_sentences
from ingest.embed import Embedder
from scholia.settings import AnswerSettings

WORD = re.compile(r"[^\W\d_]{4,}", re.UNICODE)
MARKERS = re.compile(r"\s*\[\d+(?:\.\d+)?(?:\s*[,;]\s*\d+(?:\.\d+)?)*\]")
STOPWORDS = frozenset(
    """this that with from which their there these those have been were what when where about
    into than then them they also such only more most other some very each both paper papers
    source sources proposes propose introduces introduce presents present uses using used
    collection study work method approach model models""".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class Verdict:
    answer: str
    citations: list[int]  # source ranks
    unsupported: list[int]  # indices of draft claims dropped
    declined: bool
    evidence: list[str] = field(default_factory=list)  # the evidence ids the answer rests on


def declined(unsupported: Iterable[int] = ()) -> Verdict:
    return Verdict(decline_text(), [], list(unsupported), True)


def decline_text(language: str = "English") -> str:
    return prompts.declines(language)["decline"]


def content_words(text: str) -> set[str]:
    return {word.casefold() for word in WORD.findall(text)} - STOPWORDS


def plain_words(text: str) -> set[str]:
    """Every word, name and figure, short ones too ("T5", "11B"), but function words."""
    return {token.casefold() for token in TOKEN.findall(text)} - FUNCTION_WORDS - STOPWORDS


def said_words(text: str) -> set[str]:
    """The stems of what `text` says, in any word form ("shows" and "showing" say one thing)."""
    return stems(plain_words(text) | content_words(text))


class Evidence:
    """The numbered evidence one question was answered from."""

    def __init__(self, packed: list[PackedSource], verifier: Verifier) -> None:
        self.packed = packed
        self.by_rank = {source.rank: source for source in packed}
        # An instruction planted in an abstract ("ignore all previous instructions …") was
        # shown to the model as data; it is never evidence an answer rests on or quotes.
        self.sentences = {
            key: sentence
            for source in packed
            for key, sentence in source.evidence.items()
            if not INSTRUCTION.search(sentence)
        }
        self.verifier = verifier
        self.similarity = verifier.similarity
        self._queries: dict[str, np.ndarray] = {}
        self._named: dict[str, list[str]] = {}

    @staticmethod
    def rank_of(key: str) -> int:
        return int(key.split(".")[0])

    def text_of(self, rank: int) -> str:
        source = self.by_rank[rank]
        return f"{source.paper.title}. {source.text}"

    def title(self, rank: int) -> str:
        return self.by_rank[rank].paper.title

    def ids_of(self, rank: int) -> list[str]:
        return [key for key in self.sentences if self.rank_of(key) == rank]

    def given(self, keys: Iterable[str]) -> list[str]:
        """The `keys` that are ids of sentences the prompt gave (a model may cite others)."""
        return [key for key in keys if key in self.sentences]

    def is_a_title(self, text: str) -> bool:
        """`text` says a shown paper's title back, or one side of its colon: it names a paper
        and claims nothing of it."""
        said = _plain(text)
        return any(
            said == _plain(part)
            for source in self.packed
            for part in [source.paper.title, *source.paper.title.split(":")]
        )

    def names_missing(self, names: Iterable[str], ranks: Iterable[int]) -> list[str]:
        return missing_names(names, (self.text_of(rank) for rank in ranks))

    def papers_named(self, text: str) -> list[str]:
        """The names of the papers shown that `text` calls them by, in its words too ("the
        accelerated preference optimization framework" names APO): a claim naming one paper is
        true of that paper, not of the one whose sentence happens to hold its figure."""
        if text not in self._named:
            papers = ((self.name(rank), self.text_of(rank)) for rank in self.by_rank)
            self._named[text] = called_by_name(text, papers)
        return self._named[text]

    def names_asked(self, analysis: QuestionAnalysis) -> list[str]:
        return [*analysis.names, *self.papers_named(analysis.text)]

    def closeness(self, text: str, keys: list[str]) -> np.ndarray:
        """MiniLM cosine of `text` with each of the `keys` sentences; each text (the question,
        a claim) is embedded once per question however often it is compared."""
        return self.similarity.vectors([self.sentences[key] for key in keys]) @ self.query(text)

    def query(self, text: str) -> np.ndarray:
        """`text` (the question, a claim, a measure) embedded once per question."""
        if text not in self._queries:
            self._queries[text] = self.similarity.embed(text)
        return self._queries[text]

    def on_point(self, key: str, analysis: QuestionAnalysis) -> bool:
        """The sentence gives what is asked: a figure of the measure asked for a quantity
        question, about the names asked."""
        if analysis.wants_figure and not self.gives(key, analysis):
            return False
        if analysis.asks in (Asks.WHICH_PAPER, Asks.COMPARISON, Asks.TOPIC):
            return True
        return not self.names_missing(self.names_asked(analysis), [self.rank_of(key)])

    def gives(self, key: str, analysis: QuestionAnalysis) -> bool:
        """The sentence states a figure of the measure asked, in the question's words or not."""
        return gives_the_figure(self.sentences[key], analysis) or self.measures(key, analysis)

    def measures(self, key: str, analysis: QuestionAnalysis) -> bool:
        """The sentence states a figure of the measure asked in other words ("pictures" counted
        as "images", "V100 cards" as "V100 GPUs"): it is about what is asked (shares a word of
        the measure, or is close in meaning to the question), and the words beside one of its
        figures are close in meaning to the measure. Closeness to the question alone is not
        enough: it comes from the subject, so a neighbouring figure (an accuracy for a learning
        rate) would pass."""
        sentence = self.sentences[key]
        settings = self.verifier.settings
        if analysis.measure in RECORD or not states_a_figure(sentence):
            return False
        shared = analysis.counted & word_stems(sentence)
        if not shared and (
            self.closeness(analysis.text, [key])[0] < settings.measure_min_similarity
        ):
            return False
        phrases = beside_figures(sentence, counts=analysis.asks == Asks.COUNT)
        if not analysis.measure or not phrases:
            return not analysis.measure
        # Phrases are many and rarely recur: embedded per question, not kept.
        beside = self.similarity.embedder.encode(phrases) @ self.query(analysis.measure)
        return float(beside.max()) >= settings.measure_words_min_similarity

    def best(
        self, analysis: QuestionAnalysis, keys: list[str], threshold: float, claim: str = ""
    ) -> tuple[str, float] | None:
        """Of `keys`, the on-point sentence closest to the question (and to what the model
        tried to claim, when given), if its closeness to the question reaches `threshold`."""
        described = self.described(analysis)
        keys = [key for key in keys if self.on_point(key, analysis) and key != described]
        if not keys:
            return None
        to_question = self.closeness(analysis.text, keys)
        scores = to_question + self.closeness(claim, keys) if claim else to_question
        index = int(scores.argmax())
        if to_question[index] < threshold:
            return None
        return keys[index], float(to_question[index])

    def stating(self, figures: set[str], top: bool = False) -> list[str]:
        """The sentences (of the best retrieved paper, if `top`) that state one of `figures`."""
        keys = self.ids_of(self.packed[0].rank) if top else list(self.sentences)
        return [key for key in keys if numbers_in(self.sentences[key]) & figures]

    def giving(self, analysis: QuestionAnalysis) -> list[str]:
        """The best retrieved paper's sentences that state a figure of the measure asked, in
        the question's words ("up to 15 percentage points" for "how many percentage points")."""
        if not analysis.measure:
            return []
        keys = self.ids_of(self.packed[0].rank)
        return [key for key in keys if gives_the_figure(self.sentences[key], analysis)]

    def copied(self, body: str, keys: list[str]) -> str | None:
        """The sentence of the cited papers that `body` copies the start of, cut short."""
        start = body.rstrip(" .,;:…").casefold()
        papers = dict.fromkeys(self.rank_of(key) for key in keys)
        for key in (key for rank in papers for key in self.ids_of(rank)):
            sentence = self.sentences[key].casefold()
            if len(start) >= MIN_COPIED_CHARS and sentence.startswith(start) and sentence != start:
                return key
        return None

    def cut_short(self, body: str, keys: list[str], analysis: QuestionAnalysis) -> str:
        """The sentence a claim cut short goes on from: of its papers' sentences, the one that
        holds the most of what it adds to the question, cited or not (a small model often cites
        the sentence beside the one it copies); of several, the closest to the claim; the cited
        one closest when it adds nothing."""
        added = said_words(body.rsplit(maxsplit=1)[0]) - said_words(analysis.text)
        papers = dict.fromkeys(self.rank_of(key) for key in keys)
        around = [key for rank in papers for key in self.ids_of(rank)]
        holding = {key: len(added & said_words(self.sentences[key])) for key in around}
        most = max(holding.values())
        keys = [key for key in around if holding[key] == most] if most else keys
        return keys[int(self.closeness(body, keys).argmax())]

    def source_of_additions(
        self, body: str, analysis: QuestionAnalysis, keys: list[str]
    ) -> tuple[str, float] | None:
        """The sentence of `keys` a claim copies what it adds to the question from (the closest
        to the claim of those holding every added word): a small model often says the question
        back and appends a piece of the answer ("… student models is T5 variants (le 11B)")."""
        added = plain_words(body) - plain_words(analysis.text)
        if len(added) < MIN_ADDED_WORDS:
            return None
        holding = [key for key in keys if added <= plain_words(self.sentences[key])]
        if not holding:
            return None
        scores = self.closeness(body, holding)
        return holding[int(scores.argmax())], float(scores.max())

    def most_relevant(
        self, rank: int, analysis: QuestionAnalysis, besides: Collection[str] = ()
    ) -> str | None:
        """The source's on-point evidence sentence that packing ranked first (of those not
        `besides`)."""
        if rank not in self.by_rank:
            return None
        ranked = self.by_rank[rank].by_relevance
        described = self.described(analysis)
        return next(
            (
                key
                for key in ranked
                if key in self.sentences
                and key not in besides
                and self.on_point(key, analysis)
                and key != described
            ),
            None,
        )

    def described(self, analysis: QuestionAnalysis) -> str | None:
        """The best paper's sentence that the description before the question says back (close
        in meaning, as a supported claim is): "In the work showing that …, which optimizer …?".
        It is how the asker found the paper, not what they ask, unless it is also the sentence
        closest to what they ask."""
        if not analysis.focus:
            return None  # checked first: `best` asks this for every question
        keys = self.ids_of(self.packed[0].rank)
        if not keys:  # its sentences all instructions planted in the abstract
            return None
        to_description = self.closeness(analysis.description, keys)
        restated = keys[int(to_description.argmax())]
        answering = keys[int(self.closeness(analysis.focus, keys).argmax())]
        says_it = to_description.max() >= self.verifier.settings.semantic_threshold
        return restated if says_it and restated != answering else None

    def asked_about(self, analysis: QuestionAnalysis) -> list[str]:
        """Where a claim whose own ids fail must be traced to, and the fallback looks: the best
        retrieved paper when the question describes the paper it asks about (retrieval matched
        the description with whole abstracts; sentence by sentence, a paraphrased description
        often matches another paper best), else all the evidence."""
        return self.ids_of(self.packed[0].rank) if analysis.focus else list(self.sentences)

    def fits_description(self, rank: int, analysis: QuestionAnalysis) -> bool:
        """The paper fits the description before the question: it is the paper `described`
        found, or one of its sentences is as close to the description; where no sentence of the
        best retrieved paper says the description back, one of its sentences is about as close
        to it as theirs are (`description_margin`). True when the question describes no paper."""
        keys = self.ids_of(rank)
        if not analysis.focus or rank == self.packed[0].rank or not keys:
            return True
        closest = float(self.closeness(analysis.description, keys).max())
        if self.described(analysis) is not None:  # a sentence of the best retrieved paper
            return closest >= self.verifier.settings.semantic_threshold
        top_keys = self.ids_of(self.packed[0].rank)
        top = float(self.closeness(analysis.description, top_keys).max()) if top_keys else 0.0
        return closest >= top - self.verifier.settings.description_margin

    def following(self, key: str) -> str | None:
        """The evidence sentence right after `key`'s in the abstract, if it was kept."""
        rank, index = (int(part) for part in key.split("."))
        positions = self.by_rank[rank].positions
        if index >= len(positions) or positions[index] != positions[index - 1] + 1:
            return None
        after = f"{rank}.{index + 1}"
        return after if after in self.sentences else None

    def quote(self, key: str, titled: bool = False) -> str:
        rank = self.rank_of(key)
        quoted = f"{self.sentences[key].rstrip()} [{rank}]"
        return f"{self.named_title(rank)} [{rank}]: {quoted}" if titled else quoted

    def named_title(self, rank: int) -> str:
        """The title, with the name the paper gives its method when the title lacks it."""
        paper = self.by_rank[rank].paper
        name = self.name(rank)
        if name is None or whole_phrase(name).search(paper.title):
            return paper.title
        return f"{paper.title} ({name})"

    def coining(self, analysis: QuestionAnalysis) -> dict[int, list[str]]:
        """The papers shown that propose what a two-word phrase of the question says ("we
        propose model specialization"), no other paper shown saying it, with the phrases: a
        comparison calls a paper by its own term as often as by its name."""
        tokens = TOKEN.findall(analysis.text)
        phrases = {
            f"{first} {second}"
            for first, second in pairwise(tokens)
            if _phrase_word(first) and _phrase_word(second)
        }
        coined: dict[int, list[str]] = {}
        for phrase in sorted(phrases):
            pattern = whole_phrase(phrase)
            saying = [rank for rank in self.by_rank if pattern.search(self.text_of(rank))]
            if len(saying) == 1 and introduces(self.by_rank[saying[0]].paper.text, phrase):
                coined.setdefault(saying[0], []).append(phrase)
        return coined

    def answering(self, rank: int, analysis: QuestionAnalysis, threshold: float) -> list[str]:
        """The paper's sentence closest to what a comparison asks of the papers apart from how
        it describes them ("… What does each conclude about …?"), if it is on the question's
        subject (close to the whole question by `threshold`): the sentence naming a paper's
        contribution rarely holds its finding."""
        if not analysis.ask:
            return []
        found = self.best(replace(analysis, text=analysis.ask), self.ids_of(rank), 0.0)
        if found is None or self.closeness(analysis.text, [found[0]])[0] < threshold:
            return []
        return [found[0]]

    def quote_all(self, keys: list[str]) -> str:
        """Sentences of one paper quoted under its title."""
        first, *more = keys
        return " ".join([self.quote(first, titled=True), *(self.quote(key) for key in more)])

    def is_named(self, rank: int, names: Iterable[str]) -> bool:
        """One of `names` is the paper's: in its title, or the name of what it proposes (a
        name its abstract only mentions, like a baseline, is not)."""
        own = f"{self.title(rank)} {self.name(rank) or ''}"
        return any(mentions(own, name) for name in names)

    def name(self, rank: int) -> str | None:
        paper = self.by_rank[rank].paper
        return paper_name(paper.title, paper.text)

    def contribution(
        self, rank: int, analysis: QuestionAnalysis, threshold: float, called: Iterable[str] = ()
    ) -> str | None:
        """The paper's on-point sentence closest to the question, preferring those that name
        what it proposes (or say what the question `called` it): a comparison compares
        contributions, not background."""
        keys = self.ids_of(rank)
        # What a comparison says of each paper apart describes one of them: a paper need only
        # match its own part.
        asked = (replace(analysis, text=text) for text in (analysis.text, *analysis.parts))
        found = next((found for a in asked if (found := self.best(a, keys, threshold))), None)
        if found is None:
            return None
        giving = [key for key in keys if self.gives(key, analysis)] if analysis.measure else []
        if giving:  # "compare the FID of …": where each paper gives it
            return (self.best(analysis, giving, 0.0) or found)[0]
        name = self.name(rank)
        naming = [key for key in keys if name is not None and name in self.sentences[key]] or [
            key for key in keys if any(introduces(self.sentences[key], p) for p in called)
        ]
        return (self.best(analysis, naming, 0.0) or found)[0]


Step = Callable[[Verdict, QuestionAnalysis, Evidence], Verdict]


class Verifier:
    def __init__(self, embedder: Embedder, settings: AnswerSettings) -> None:
        self.similarity = SentenceSimilarity(embedder)
        self.settings = settings
        self.steps: list[Step] = [
            self.quote_when_declined,
            self.add_the_best_evidence,
            self.quote_the_kind_asked,
            self.name_the_thing_asked,
            self.answers_the_question,
            self.cover_each_paper,
            self.correct_premise,
            correct_direction,
            self.the_best_paper,
            continue_quotes,
            name_the_papers,
        ]

    def verify(
        self, draft: Draft, analysis: QuestionAnalysis, packed: list[PackedSource]
    ) -> Verdict:
        if not packed:
            return declined()
        evidence = Evidence(packed, self)
        verdict = self.check_claims(draft, analysis, evidence)
        for step in self.steps:
            verdict = step(verdict, analysis, evidence)
        return verdict

    def check_claims(self, draft: Draft, analysis: QuestionAnalysis, evidence: Evidence) -> Verdict:
        parts: list[str] = []
        used: list[str] = []
        unsupported: list[int] = []
        for index, claim in enumerate(draft.claims):
            body, cut = _in_the_question_s_script(MARKERS.sub("", claim.text).strip(), analysis)
            cut = cut or claim.cut
            cited = evidence.given(claim.evidence)
            keys = self.support(body, cited, evidence) if cited else None
            if keys is None:  # a small model often cites the wrong paper's sentence
                keys = self.support(body, list(evidence.sentences), evidence)
                if keys and not set(keys) & set(evidence.asked_about(analysis)):
                    keys = None  # traced to another paper than the one the question describes
                cited = keys or cited
            papers = {evidence.rank_of(key) for key in keys or ()}
            if papers and not any(evidence.fits_description(rank, analysis) for rank in papers):
                keys, body = None, ""  # true of another paper than the one described: not of it
            copied = evidence.copied(body, cited)
            if keys is not None and (cut or copied):  # a cut claim, completed
                key = copied or evidence.cut_short(body, keys, analysis)
                parts.append(evidence.quote(key))
                used.append(key)
                continue
            if (
                keys is not None
                and self._says_something(body, analysis)
                and not evidence.is_a_title(body)
            ):
                if len(content_words(body)) < MIN_CLAIM_WORDS:  # "24x faster": quote its source
                    parts.append(evidence.quote(keys[0]))
                else:
                    ranks = dict.fromkeys(evidence.rank_of(key) for key in keys)
                    parts.append(body.rstrip() + " " + "".join(f"[{r}]" for r in ranks))
                used += keys
                continue
            unsupported.append(index)
            instead = (
                self.instead(body, analysis, evidence)
                if self.settings.extractive_fallback
                else None
            )
            if instead is not None:
                parts.append(evidence.quote(instead))
                used.append(instead)
        if not parts:
            return declined(unsupported)
        return _verdict(" ".join(dict.fromkeys(parts)), used, unsupported)

    def instead(self, body: str, analysis: QuestionAnalysis, evidence: Evidence) -> str | None:
        """The wording failed: a sentence of the papers it cites may still answer. Its ids may
        point at the wrong paper (`asked_about`). A claim that is a question ("Do the principles
        remain valid?") says nothing to look for."""
        around = evidence.asked_about(analysis)
        claim = "" if is_question(body) else body
        best = (
            (claim and evidence.source_of_additions(claim, analysis, around))
            or evidence.best(analysis, around, self.settings.fallback_min_similarity, claim)
            or evidence.best(analysis, evidence.stating(numbers_in(body), top=True), 0.0)
            or evidence.best(analysis, evidence.giving(analysis), 0.0)
        )
        return best[0] if best else None

    def support(self, body: str, keys: list[str], evidence: Evidence) -> list[str] | None:
        """The evidence ids (from `keys`, or other sentences of their papers) that support
        `body`, or None."""
        if not body or not keys:
            return None
        ranks = list(dict.fromkeys(evidence.rank_of(key) for key in keys))
        figures = numbers_in(body)
        chosen = list(keys)
        for figure in figures:
            holding = [k for k in chosen if figure in numbers_in(evidence.sentences[k])]
            if holding:
                continue
            holding = [
                key
                for rank in ranks
                for key in evidence.ids_of(rank)
                if figure in numbers_in(evidence.sentences[key])
            ]
            if not holding and not any(figure in numbers_in(evidence.title(r)) for r in ranks):
                return None  # invented, or another paper's figure
            chosen += holding[:1]
        if figures:  # the claim is about the papers its figures come from
            holders = {
                evidence.rank_of(k) for k in chosen if numbers_in(evidence.sentences[k]) & figures
            }
            chosen = [k for k in chosen if evidence.rank_of(k) in holders] or chosen
            ranks = [rank for rank in ranks if rank in holders] or ranks
        if evidence.names_missing([*names_in(body), *evidence.papers_named(body)], ranks):
            return None  # one paper's name credited with another's idea
        if any(_reversed(body, evidence.sentences[key], figures) for key in chosen):
            return None  # "FID 5.2% worse" where the paper improves it by 5.2%
        words = content_words(body)
        holding_figures = [k for k in chosen if numbers_in(evidence.sentences[k]) & figures]
        if figures and len(words) < MIN_CLAIM_WORDS:
            return holding_figures or keys
        scores = evidence.closeness(body, chosen)
        best = chosen[int(scores.argmax())]
        lexical = len(words & content_words(evidence.text_of(evidence.rank_of(best))))
        if scores.max() < self.settings.semantic_threshold:
            if not words or lexical / len(words) < self.settings.lexical_threshold:
                return None
            # Said in the paper's words: traced to the sentence holding most of them, when the
            # cited one holds fewer (a small model often cites the one beside it).
            around = evidence.ids_of(evidence.rank_of(best))
            held = {key: len(words & content_words(evidence.sentences[key])) for key in around}
            most = max(held.values())
            if held[best] < most:
                holding = [key for key in around if held[key] == most]
                best = holding[int(evidence.closeness(body, holding).argmax())]
        supporting = list(dict.fromkeys([best, *holding_figures]))
        if NEGATION.search(body) and not any(
            NEGATION.search(evidence.sentences[key]) for key in supporting
        ):
            return None  # denies what its sentence says: "the study does not check …"
        return supporting

    def _says_something(self, body: str, analysis: QuestionAnalysis) -> bool:
        """A statement, not a question, and not the question said back: a claim adds a word,
        name or figure of its own."""
        if is_question(body):
            return False
        said = said_words(body) | {n.casefold() for n in names_in(body)}
        asked = said_words(analysis.text) | {n.casefold() for n in analysis.names}
        return bool(said - asked) or bool(numbers_in(body) - set(analysis.figures))

    def quote_when_declined(
        self, verdict: Verdict, analysis: QuestionAnalysis, evidence: Evidence
    ) -> Verdict:
        """Nothing survived, yet the best source's most relevant sentence answers: quote it.
        The bar is higher than for a claim's own evidence: nothing here was cited. The paper's
        record ("authors: …") answers who wrote it however little its words share."""
        if not verdict.declined or not self.settings.extractive_fallback:
            return verdict
        key = evidence.most_relevant(evidence.packed[0].rank, analysis)
        if key is None:
            return verdict
        recorded = from_the_record(evidence.sentences[key], analysis)
        if not recorded and evidence.closeness(analysis.text, [key])[0] < (
            self.settings.decline_override_similarity
        ):
            return verdict
        titled = recorded or analysis.asks in (Asks.TOPIC, Asks.WHICH_PAPER)
        return _verdict(evidence.quote(key, titled), [key], verdict.unsupported)

    def add_the_best_evidence(
        self, verdict: Verdict, analysis: QuestionAnalysis, evidence: Evidence
    ) -> Verdict:
        """A question about one paper gets, besides the model's claim, the cited paper's most
        relevant sentence verbatim (for each thing it asks, where it asks several): a small
        model often paraphrases a neighbouring sentence and drops the detail asked for."""
        if verdict.declined or not self.settings.extractive_fallback:
            return verdict
        if analysis.asks not in (Asks.FACT, Asks.FIGURE, Asks.COUNT) or not verdict.citations:
            return verdict
        rank, threshold = verdict.citations[0], self.settings.fallback_min_similarity
        if not analysis.asked:
            return _with_evidence(
                verdict, analysis, evidence, evidence.most_relevant(rank, analysis)
            )
        for part in analysis.asked:
            keys = evidence.ids_of(rank)
            # The record answers its part however little its words share with it.
            quoted = next(
                (key for key in keys if from_the_record(evidence.sentences[key], part)), None
            )
            if quoted is None:
                found = evidence.best(part, keys, threshold)
                quoted = found[0] if found else None
            verdict = _with_evidence(verdict, part, evidence, quoted)
        return verdict

    def quote_the_kind_asked(
        self, verdict: Verdict, analysis: QuestionAnalysis, evidence: Evidence
    ) -> Verdict:
        """Asked for a kind of thing ("which benchmark problems", "which two fundamental
        questions"), the answer rests on a sentence naming that kind: when none of its evidence
        does, the cited paper's sentence that does and is closest to the question joins it."""
        if verdict.declined or not analysis.kind or not self.settings.extractive_fallback:
            return verdict
        kind = word_stems(analysis.kind)

        def names_it(key: str) -> bool:
            return kind <= word_stems(evidence.sentences[key])

        if any(names_it(key) for key in evidence.given(verdict.evidence)):
            return verdict
        keys = [key for key in evidence.ids_of(verdict.citations[0]) if names_it(key)]
        found = evidence.best(analysis, keys, 0.0)
        return _with_evidence(verdict, analysis, evidence, found[0] if found else None)

    def name_the_thing_asked(
        self, verdict: Verdict, analysis: QuestionAnalysis, evidence: Evidence
    ) -> Verdict:
        """Asked which named thing a paper used ("which datasets", "what GPU") or what something
        is called, the answer names one the question does not: else the sentence it cites that
        does, or the cited paper's closest to the question, is quoted after it; where none
        does, the paper does not say, and the answer is a decline, not a sentence on the
        subject. A small model often says the sentence back without its name."""
        if verdict.declined or not analysis.wants_a_name or not verdict.citations:
            return verdict
        rank = verdict.citations[0]
        paper = evidence.by_rank[rank].paper
        abstract = f"{paper.title}. {paper.text}"
        # Asked what a thing is called, the paper's own names and short forms answer.
        coined = analysis.asks_the_name and not analysis.asks_a_known_kind
        own_name = None if coined else evidence.name(rank)
        own = "" if coined else f"{paper.title} {own_name or ''}"
        known = said_words(f"{analysis.text} {own}")
        context = "" if coined else abstract
        if coined:  # the short form of what the question says in full is not the name asked
            forms = short_forms(abstract).items()
            known |= stems({short.casefold() for short, said in forms if said_words(said) & known})

        # A variant of the paper's own method ("MKOR-H" of MKOR) is its own too.
        variant = f"{own_name}-".casefold() if own_name else None

        # Asked which datasets, a name counts beside a word for datasets: a method's or a
        # baseline's name elsewhere in the sentence does not answer.
        kind, window = analysis.kind_words, self.settings.kind_name_window

        def names_a_thing(text: str) -> bool:
            return any(
                stems({name.casefold()}) - known
                and not (variant and name.casefold().startswith(variant))
                and (not kind or _beside(sentence, name, kind, window))
                for sentence in (split_sentences(text) if kind else [text])
                for name in proper_names(sentence, context)
            )

        if names_a_thing(MARKERS.sub("", verdict.answer)):
            return verdict
        if not names_a_thing(paper.text):  # its sentences left out of the prompt included
            return declined(verdict.unsupported)
        if not self.settings.extractive_fallback:
            return verdict
        used = evidence.given(verdict.evidence)
        keys = [key for key in used if names_a_thing(evidence.sentences[key])] or [
            key for key in evidence.ids_of(rank) if names_a_thing(evidence.sentences[key])
        ]
        found = evidence.best(analysis, keys, 0.0)
        if found is None:  # no sentence given names one: the answer cannot have named it
            return declined(verdict.unsupported)
        if evidence.sentences[found[0]] in verdict.answer:
            return verdict
        return _quoted_after(verdict, evidence, found[0])

    def answers_the_question(
        self, verdict: Verdict, analysis: QuestionAnalysis, evidence: Evidence
    ) -> Verdict:
        """True statements about something else do not answer: a figure question needs the kind
        of figure asked for; the names asked about must be named by the cited papers."""
        if verdict.declined:
            return verdict
        if analysis.wants_figure and not any(
            evidence.on_point(key, analysis) for key in evidence.given(verdict.evidence)
        ):
            return self.on_point_instead(verdict, analysis, evidence)
        used = evidence.given(verdict.evidence)
        if used and evidence.closeness(analysis.text, used).max() < (
            self.settings.answer_min_similarity
        ):
            return declined(verdict.unsupported)  # true, but about something else
        if analysis.asks in (Asks.WHICH_PAPER, Asks.COMPARISON, Asks.TOPIC):
            return verdict
        if evidence.names_missing(evidence.names_asked(analysis), verdict.citations):
            return declined(verdict.unsupported)
        return verdict

    def on_point_instead(
        self, verdict: Verdict, analysis: QuestionAnalysis, evidence: Evidence
    ) -> Verdict:
        """A figure, but not of what was asked: the cited papers' sentence that gives it, if
        one does (a small model often quotes the neighbouring figure), else a decline."""
        keys = [key for rank in verdict.citations for key in evidence.ids_of(rank)]
        found = self.settings.extractive_fallback and evidence.best(
            analysis, keys, self.settings.fallback_min_similarity
        )
        if not found:
            return declined(verdict.unsupported)
        return _verdict(evidence.quote(found[0]), [found[0]], verdict.unsupported)

    def cover_each_paper(
        self, verdict: Verdict, analysis: QuestionAnalysis, evidence: Evidence
    ) -> Verdict:
        """A comparison answers from each paper compared, up to the number asked for: those
        the question names, then the best retrieved with evidence on point. Each is named by
        what it proposes and quoted where it says what it contributes, then where it answers
        what the question asks of each ("what does each find about …?"): the sentences of it
        that the checked claims cite (the model read the question), else its sentence closest
        to the ask and the one packing ranked most relevant (closeness, shared words, what it
        names or reports): closeness to the ask alone often picks background. What the model
        wrote does not choose the papers: a small model often cites a neighbour of those
        compared."""
        if analysis.asks != Asks.COMPARISON or not self.settings.extractive_fallback:
            return verdict
        threshold = self.settings.compare_min_similarity
        coined = evidence.coining(analysis)
        contributions = {
            rank: key
            for rank in evidence.by_rank
            if (key := evidence.contribution(rank, analysis, threshold, coined.get(rank, ())))
            is not None
        }
        named = [
            rank
            for rank in contributions
            if evidence.is_named(rank, analysis.names) or rank in coined
        ]
        chosen = list(dict.fromkeys([*named, *contributions]))[: analysis.papers_wanted]
        if len(chosen) < 2:
            return verdict
        cited = evidence.given(verdict.evidence)
        quoted = []
        for rank in chosen:
            contribution = contributions[rank]
            read = [key for key in cited if evidence.rank_of(key) == rank and key != contribution]
            if not read:
                relevant = evidence.most_relevant(rank, analysis, besides=[contribution])
                read = [*evidence.answering(rank, analysis, threshold), *filter(None, [relevant])]
            quoted.append([contribution, *read])
        answer = " ".join(evidence.quote_all(list(dict.fromkeys(keys))) for keys in quoted)
        return _verdict(answer, [key for keys in quoted for key in keys], verdict.unsupported)

    def the_best_paper(
        self, verdict: Verdict, analysis: QuestionAnalysis, evidence: Evidence
    ) -> Verdict:
        """Asked which paper, the answer is the best retrieved one when its evidence is on
        point: shown several, a small model often names a neighbour of the paper described.
        On point means close enough to the question, or closer than what the answer cites."""
        first = next(iter(evidence.by_rank))
        if (
            analysis.asks != Asks.WHICH_PAPER
            or verdict.declined
            or first in verdict.citations
            or not self.settings.extractive_fallback
        ):
            return verdict
        cited = evidence.given(verdict.evidence)
        closest_cited = float(evidence.closeness(analysis.text, cited).max()) if cited else 1.0
        threshold = min(self.settings.fallback_min_similarity, closest_cited)
        key = evidence.contribution(first, analysis, threshold)
        if key is None:
            return verdict
        return _verdict(evidence.quote(key), [key], verdict.unsupported)

    def correct_premise(
        self, verdict: Verdict, analysis: QuestionAnalysis, evidence: Evidence
    ) -> Verdict:
        """A question stating a figure its paper does not report rests on a false premise: say
        so, then what the paper reports, and which other paper the figure comes from."""
        if not analysis.figures or (verdict.declined and not self.settings.extractive_fallback):
            return verdict  # declined: nothing of the model's to correct; a quote would stand in
        # Declined, the premise is the paper the question describes, else the one it names.
        described_paper = [evidence.packed[0].rank] if analysis.focus else []
        about = (
            verdict.citations
            or described_paper
            or [
                rank
                for rank in list(evidence.by_rank)[:2]
                if any(
                    name.casefold() in evidence.title(rank).casefold() for name in analysis.names
                )
            ][:1]
        )
        papers = [evidence.by_rank[rank].paper for rank in about]
        reported = set().union(*(numbers_in(f"{p.title}. {p.text}") for p in papers))
        claimed = [figure for figure in analysis.figures if figure not in reported]
        if not about or not claimed:
            return verdict
        figure_asked = replace(analysis, asks=Asks.FIGURE, counted=frozenset(), measure="")
        keys = [key for rank in about for key in evidence.ids_of(rank)]
        instead = evidence.best(figure_asked, keys, self.settings.fallback_min_similarity)
        elsewhere = next(
            (
                (figure, key)
                for figure in claimed
                for key, sentence in evidence.sentences.items()
                if evidence.rank_of(key) not in about and figure in numbers_in(sentence)
            ),
            None,
        )
        if verdict.declined and instead is None and elsewhere is None:
            return verdict
        parts = [prompts.load("premise").format(figures=", ".join(claimed)).strip()]
        used = [] if verdict.declined else list(verdict.evidence)
        if instead is not None or not verdict.declined:
            parts.append(prompts.load("premise_reported").strip())
            if instead is not None and evidence.sentences[instead[0]] not in verdict.answer:
                parts.append(evidence.quote(instead[0]))
                used.append(instead[0])
            if not verdict.declined:
                parts.append(verdict.answer)
        if elsewhere is not None:
            figure, key = elsewhere
            rank = evidence.rank_of(key)
            sentence = evidence.sentences[key]
            title = evidence.title(rank)
            premise = prompts.load("premise_elsewhere").strip()
            parts.append(premise.format(figure=figure, title=title, rank=rank, sentence=sentence))
            used.append(key)
        return _verdict(" ".join(parts), used, verdict.unsupported)


# A denial; "not only" affirms.
NEGATION = re.compile(r"\b(?:not(?!\s+only\b)|no|never|none|neither|nor|cannot)\b|n't\b", re.I)
MIN_CLAIM_WORDS = 3  # content words below which a claim is a fragment ("24x faster")
MIN_ADDED_WORDS = 2  # fewer words added to the question say too little to trace
MIN_COPIED_CHARS = 40  # a claim this long that starts a sentence word for word copies it


# Words that join a question's phrases rather than name anything.
JOINING_WORDS = FUNCTION_WORDS | frozenset(
    "and or not nor it its each what how why who whom this these those their they them".split()  # noqa: SIM905
)


def _phrase_word(token: str) -> bool:
    return len(token) >= 3 and token[0].isalpha() and token.casefold() not in JOINING_WORDS


def _in_the_question_s_script(body: str, analysis: QuestionAnalysis) -> tuple[str, bool]:
    """A claim to a question in Latin script, cut where it leaves that script, and whether it
    was: a small multilingual model drifts into Chinese mid-claim ("… each client only通信")."""
    drift = None if NON_LATIN.search(analysis.text) else NON_LATIN.search(body)
    return (body[: drift.start()].rstrip(), True) if drift else (body, False)


def name_the_papers(verdict: Verdict, analysis: QuestionAnalysis, evidence: Evidence) -> Verdict:
    """Asked which paper (or for a topic), the answer opens with the titles it comes from."""
    if verdict.declined or analysis.asks not in (Asks.WHICH_PAPER, Asks.TOPIC):
        return verdict
    titled = [
        f"{evidence.named_title(rank)} [{rank}]"
        for rank in verdict.citations
        if rank in evidence.by_rank and evidence.title(rank) not in verdict.answer
    ]
    if not titled:
        return verdict
    return replace(verdict, answer=f"{'; '.join(titled)}: {verdict.answer}")


# A sentence that opens by referring back goes on with what the one before it said ("TI
# intervenes …" after "… a method called Teacher Intervention (TI)"; "To test this hypothesis,
# we devise …").
CONTINUES = re.compile(
    r"^(?:it|its|they|their|these|such|this(?!\s+(?:paper|work|study|article|survey)\b)"
    r"|specifically|in particular|in detail|concretely|namely"
    r"|to (?:this|that) end|to do (?:so|this)"
    r"|to (?:address|tackle|overcome|solve|test|achieve|verify|realize) (?:this|these|that|them|it)"
    r")\b",
    re.IGNORECASE,
)


def continue_quotes(verdict: Verdict, analysis: QuestionAnalysis, evidence: Evidence) -> Verdict:
    """A sentence quoted in answer to what a paper does is followed by the next one when that
    one goes on from it: a sentence naming a method or stating a problem rarely says how."""
    if verdict.declined or analysis.asks != Asks.FACT:
        return verdict
    answer, keys = verdict.answer, list(verdict.evidence)
    for key in verdict.evidence:
        after = evidence.following(key)
        if after is None or evidence.sentences[after] in answer:
            continue
        name = evidence.name(evidence.rank_of(key))
        sentence = evidence.sentences[after]
        goes_on = CONTINUES.match(sentence) or (name and sentence.startswith(name))
        quoted = evidence.quote(key)
        if goes_on and quoted in answer:
            answer = answer.replace(quoted, f"{quoted} {evidence.quote(after)}", 1)
            keys.append(after)
    return _verdict(answer, keys, verdict.unsupported) if keys != verdict.evidence else verdict


def _beside(sentence: str, name: str, words: frozenset[str], window: int) -> bool:
    """`name` stands within `window` words of one of `words` (stems) in `sentence`."""
    tokens = TOKEN.findall(sentence)
    first = name.split()[0]
    at_name = [i for i, token in enumerate(tokens) if token.startswith(first)]
    at_word = [i for i, token in enumerate(tokens) if stems({token.casefold()}) & words]
    return any(abs(i - j) <= window for i in at_name for j in at_word)


def _plain(text: str) -> str:
    return " ".join(re.findall(r"[^\W_]+", text.casefold()))


def _reversed(claim: str, sentence: str, figures: Iterable[str], language: str = "English") -> str:
    """The first of `figures` that `claim` states in the opposite direction to `sentence`."""
    for figure in figures:
        said = direction_of(claim, figure, language)
        reported = direction_of(sentence, figure) if said else None
        if said and reported and reported[0] == said[0] and reported[1] != said[1]:
            return figure
    return ""


def correct_direction(verdict: Verdict, analysis: QuestionAnalysis, evidence: Evidence) -> Verdict:
    """A question stating a figure its paper reports the other way round ("why did it make FID
    5.2% worse" of a paper improving FID by 5.2%) rests on a false premise: say so and quote
    the paper; an answer that took the premise for granted goes."""
    ranks = verdict.citations or list(evidence.by_rank)[:1]
    for key in (key for rank in ranks for key in evidence.ids_of(rank)):
        if _reversed(analysis.text, evidence.sentences[key], analysis.figures, analysis.language):
            answer = f"{prompts.load('premise_reversed').strip()} {evidence.quote(key)}"
            return _verdict(answer, [key], verdict.unsupported)
    return verdict


def _with_evidence(
    verdict: Verdict, analysis: QuestionAnalysis, evidence: Evidence, key: str | None
) -> Verdict:
    """The verdict with the sentence `key` quoted after it, unless the answer says it already."""
    if key is None or evidence.sentences[key] in verdict.answer:
        return verdict
    # Citing the sentence is not saying it: a figure question whose answer states none of the
    # sentence's figures, or only some (of several, a small model often states the wrong one),
    # may still lack what was asked.
    stated = numbers_in(MARKERS.sub("", verdict.answer))
    figures = numbers_in(evidence.sentences[key])
    figure_left_out = analysis.wants_figure and (
        not stated & figures or bool(figures - stated - set(analysis.figures))
    )
    if key in verdict.evidence and not figure_left_out:
        return verdict
    if analysis.wants_figure and not gives_the_figure(evidence.sentences[key], analysis):
        return verdict  # unasked for, it must name the measure asked
    return _quoted_after(verdict, evidence, key)


def _quoted_after(verdict: Verdict, evidence: Evidence, key: str) -> Verdict:
    """The verdict with the sentence `key` quoted after its answer and added to its evidence."""
    answer = f"{verdict.answer} {evidence.quote(key)}"
    return _verdict(answer, [*verdict.evidence, key], verdict.unsupported)


def _verdict(answer: str, keys: list[str], unsupported: list[int]) -> Verdict:
    keys = list(dict.fromkeys(keys))
    ranks = sorted({Evidence.rank_of(key) for key in keys})
    return Verdict(answer, ranks, unsupported, False, keys)
