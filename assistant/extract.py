"""Facts taken verbatim from the sources: the name a paper gives its method, and the sentence
that best answers a question when the LLM's own draft does not survive verification.

Small models often find the right paper but garble the answer: asked which paper proposes a
method, they restate the title and drop the method's name; asked for a figure, they echo the
question. Both are repaired from the source text itself, so nothing here can be invented.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from rapidfuzz import fuzz, process

import prompts
from assistant.pack import PackedSource
from assistant.verify import (
    NUMBER,
    QUANTITY,
    SourceFacts,
    Verdict,
    Verifier,
    content_words,
    is_decline,
    missing_terms,
    names_in,
    numbers_in,
)
from ingest.chunk import split_sentences

# Cues that a name follows: strong ones name it at once ("a framework called X"); weak ones
# usually do, a few words later ("we propose a new method, X").
STRONG_CUE = re.compile(
    r"\b(?:call(?:ed)?|named|dubbed|termed|coined|refer(?:red)? to (?:it )?as)\s+(?:it\s+)?(?:the\s+)?",
    re.IGNORECASE,
)
WEAK_CUE = re.compile(r"\b(?:we|this paper|this work)\s+(?:propose|introduce|present)\w*\b", re.I)
ANY_CUE = re.compile(
    r"\b(?:propos|introduc|present|call|nam|dub|term|coin|refer)\w*|\bour (?:new |novel )?method",
    re.I,
)
# "Linguistic Graph Knowledge Distillation (LinguGKD)", "Structure-aware Planning with Accurate
# World Model (SWAP)": capitalised words, small joining words between them, then the short name.
LINK = r"(?:of|for|with|and|as|via|in|on|to|the|a|from)"
CAPITAL = r"[A-Z0-9][\w\-+']*"
EXPANDED_NAME = re.compile(
    rf"((?:{CAPITAL}\s+(?:{LINK}\s+)*)*{CAPITAL})\s*\(([^()\s][^()]{{0,30}})\)",
)
# "the MhERGAN algorithm", "our EvoPress framework"
THING = (
    r"(?:algorithm|method|framework|model|approach|paradigm|benchmark|system|architecture"
    r"|optimizer|dataset)"
)
NAMED_THING = re.compile(
    rf"\bour\s+({CAPITAL})\s+{THING}\b"
    rf"|\bthe\s+({CAPITAL})\s+{THING}\s+(?:we\s+)?(?:develop|propos|introduc|present)\w*"
)
CAPITALISED_PHRASE = re.compile(rf"^(?:(?:a|an|the)\s+)?((?:{CAPITAL}\s+)*{CAPITAL})")
TITLE_NAME = re.compile(r"^\s*(.{2,40}?)\s*(?::|\s--)\s")
NOT_A_NAME_START = frozenset("a an the on is are what how can why towards toward".split())  # noqa: SIM905
# Terms abstracts define in passing ("large language models (LLMs)"), not what a paper names.
GENERIC_NAMES = frozenset(
    """llm gpu cpu nlp cv ai ml dnn cnn gnn rl fl sota bert gpt-4 pe lm mlp ann svm gan ptm vit
    dit imagenet cifar-10 cifar-100 moe sgd""".split()  # noqa: SIM905
)
MODEL_SIZE = re.compile(r"^\d+(?:\.\d+)?[BMK]$")
MAX_TOPIC_WORDS = 4
NOT_FIGURES = re.compile(r"\b\d-?D\b|\(\d\)")  # "3D", "2-D"; the enumerator "(1)"
MARKUP = re.compile(r"<[^<>]{0,200}>")
# A misspelt word still matches its stem ("promts" ~ "prompt"), from this length on.
MIN_FUZZY_CHARS = 5
FUZZY_SCORE = 85
# Words a quoted sentence must share with the question beyond those naming the paper.
MIN_SHARED_WORDS = 2
# Questions whose answer is a paper (or several): the answer should name what each one proposes.
PAPERS_ASKED = re.compile(
    r"\b(?:which|what|two|three|both)\s+(?:papers?|works?|studies|methods?|approaches?|ones)\b"
    r"|\bwhich are they\b",
    re.IGNORECASE,
)


def method_name(title: str, abstract: str) -> str | None:
    """The name the paper gives what it proposes ("FedCompass", "Speculative Jacobi Decoding
    (SJD)"), or None when it gives none."""
    prefix = TITLE_NAME.match(title)
    if prefix:
        words = prefix.group(1).split()
        if len(words) <= 4 and words[0].casefold() not in NOT_A_NAME_START:
            return prefix.group(1)
    for match in EXPANDED_NAME.finditer(abstract):
        # "the Generative Pre-trained Diffusion (GPD) paradigm" in a paper so titled
        if _is_name(match.group(2)) and _plain(title).startswith(_plain(match.group(1))):
            return f"{match.group(1)} ({match.group(2).strip()})"
    for match in NAMED_THING.finditer(abstract):
        name = match.group(1) or match.group(2)
        if names_in(name) and _is_name(name):
            return name
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", abstract) if ANY_CUE.search(s)]
    for sentence in sentences:
        for match in EXPANDED_NAME.finditer(sentence):
            phrase, short = match.group(1), match.group(2).strip()
            if _is_name(short):
                # "…, Elect Sign & Merge (TIES-Merging)": when the long form does not parse,
                # the short name alone still names the method.
                return f"{phrase} ({short})" if len(phrase.split()) >= 2 else short
    for sentence in sentences:
        for cue in STRONG_CUE.finditer(sentence):
            phrase = CAPITALISED_PHRASE.match(sentence[cue.end() :])
            if phrase and _is_name(phrase.group(1)):
                return phrase.group(1)
        for cue in WEAK_CUE.finditer(sentence):
            window = sentence[cue.end() : cue.end() + 80]
            for name in names_in(window):
                if _is_name(name):
                    return name
    return None


def _plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.casefold()).split())


def _is_name(text: str) -> bool:
    if not any(char.isupper() for char in text) or MODEL_SIZE.match(text):
        return False
    key = text.casefold()
    return key not in GENERIC_NAMES and key.rstrip("s") not in GENERIC_NAMES


def name_cited_methods(verdict: Verdict, sources: list[PackedSource], question: str) -> Verdict:
    """Asked which paper does something, say what each cited paper calls its method: a title
    alone rarely tells the reader the name they will meet elsewhere."""
    if verdict.declined or not PAPERS_ASKED.search(question):
        return verdict
    by_rank = {source.rank: source for source in sources}
    said = verdict.answer.casefold()
    added: list[str] = []
    for rank in verdict.citations:
        source = by_rank.get(rank)
        if source is None:
            continue
        name = method_name(source.paper.title, source.paper.text)
        if name is None or _short_name(name).casefold() in said:
            continue
        added.append(f"{source.paper.title} [{rank}] introduces {name}.")
        said += " " + name.casefold()
    if not added:
        return verdict
    return Verdict(
        " ".join([verdict.answer, *added]), verdict.citations, verdict.unsupported, False
    )


def _short_name(name: str) -> str:
    """ "Speculative Jacobi Decoding (SJD)" → "SJD": either form in the answer names it."""
    return name[name.rindex("(") + 1 : -1] if name.endswith(")") else name


def quote_best_sentence(
    question: str,
    draft: str,
    sources: list[PackedSource],
    verifier: Verifier,
    min_similarity: float,
    depth: int = 2,
    needs_number: bool = False,
) -> Verdict | None:
    """When no sentence of the draft survived verification: the source sentence closest in
    meaning to the question, quoted with its citation, or None when none is close enough.

    Candidates come from the `depth` best-ranked sources that mention every name the question
    asks about, and must share words with what is asked (see `_asked_stems`); a
    question asking for a quantity needs a number. A draft that declined is taken at its word
    (the model read the sources and found nothing) unless the "question" is only a topic
    ("grokking"): then the closest sentence of the best source, under its title, is the answer.
    """
    topic = is_topic(question)
    if not sources or (is_decline(draft) and not topic):
        return None
    wants_figure = needs_number or bool(QUANTITY.search(question))
    candidates = [
        (source, sentence)
        for source in sources[:depth]
        if not missing_terms(question, [source])
        for asked in [_asked_stems(question, source)]
        for sentence in split_sentences(source.text)
        if topic
        or (
            (not wants_figure or states_a_figure(sentence))
            and _shares_what_is_asked(asked, sentence)
        )
    ]
    if not candidates:
        return None
    similarity = verifier.similarities(question, [sentence for _, sentence in candidates])
    best = int(similarity.argmax())
    if similarity[best] < min_similarity:
        return None
    source, sentence = candidates[best]
    quote = f"{sentence.rstrip()} [{source.rank}]"
    if topic:
        quote = f"{source.paper.title} [{source.rank}]: {quote}"
    return Verdict(quote, [source.rank], [], False)


def correct_premise(
    verdict: Verdict,
    question: str,
    sources: list[PackedSource],
    verifier: Verifier,
    min_similarity: float,
) -> Verdict:
    """A question stating a figure that the papers it is about do not report ("Why is ProDiff
    only 5x faster…?") rests on a false premise: say so, then what they do report."""
    cited = [source for source in sources if source.rank in verdict.citations]
    if verdict.declined or not cited:
        return verdict
    reported = set().union(*(SourceFacts(source).numbers for source in cited))
    claimed = sorted(numbers_in(MARKUP.sub(" ", question)) - reported)
    if not claimed:
        return verdict
    quoted = quote_best_sentence(
        question, "", cited, verifier, min_similarity, depth=len(cited), needs_number=True
    )
    answer = quoted.answer if quoted is not None else verdict.answer
    if quoted is not None and quoted.answer not in verdict.answer:
        answer = f"{quoted.answer} {verdict.answer}"
    correction = prompts.load("premise").format(figures=", ".join(claimed)).strip()
    citations = sorted(set(verdict.citations) | set(quoted.citations if quoted else []))
    return Verdict(f"{correction} {answer}", citations, verdict.unsupported, False)


def states_a_figure(sentence: str) -> bool:
    """A number that is a figure, not a dimension ("3D") or a list item ("(1)")."""
    return bool(NUMBER.search(NOT_FIGURES.sub(" ", sentence)))


def is_topic(question: str) -> bool:
    """A few words and no question ("grokking", "gossip learning"): asks what the papers say."""
    return "?" not in question and len(question.split()) <= MAX_TOPIC_WORDS


def _asked_stems(question: str, source: PackedSource) -> set[str]:
    """What the question asks, beyond the words that only pick out the paper (its title, the
    names in the question): "How many parameters does mPLUG-2 have?" asks about parameters,
    not mPLUG-2. Markup in the question is not what it asks about."""
    question = MARKUP.sub(" ", question)
    identifying = content_words(source.paper.title) | content_words(" ".join(names_in(question)))
    return _stems(content_words(question) - identifying)


def _shares_what_is_asked(asked: set[str], sentence: str) -> bool:
    """The sentence shares enough of the asked words; misspelt ones ("promts") still count."""
    offered = _stems(content_words(sentence))
    shared = [
        stem
        for stem in asked
        if stem in offered
        or (
            len(stem) >= MIN_FUZZY_CHARS
            and process.extractOne(stem, offered, scorer=fuzz.ratio, score_cutoff=FUZZY_SCORE)
        )
    ]
    return len(shared) >= min(MIN_SHARED_WORDS, len(asked))


def _stems(words: set[str]) -> set[str]:
    return set(_stemmer().stemWords(sorted(words)))


@cache
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")
