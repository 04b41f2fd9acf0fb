"""Facts taken verbatim from the sources: the name a paper gives its method, and the sentence
that best answers a question when the LLM's own draft does not survive verification.

Small models often find the right paper but garble the answer: asked which paper proposes a
method, they restate the title and drop the method's name; asked for a figure, they echo the
question. Both are repaired from the source text itself, so nothing here can be invented.
"""

from __future__ import annotations

import re
import unicodedata

from bm25s.stopwords import STOPWORDS_EN_PLUS
from rapidfuzz import fuzz, process

import prompts
from assistant.pack import PackedSource
from assistant.verify import (
    SEVERAL_PAPERS,
    SourceFacts,
    Verdict,
    Verifier,
    asks_for_figure,
    content_words,
    decline_text,
    gives_the_figure,
    is_decline,
    missing_terms,
    names_in,
    numbers_in,
    stems,
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
FIGURE_CONTEXT = 4  # words either side of a figure in the question that say what it measures
RESOLUTION = re.compile(r"\b\d+\s*[x×]\s*\d+\b")  # "256x256" names a dataset's size
MAX_ACRONYM_LETTERS = 6
ACRONYM = re.compile(r"\b(?=(?:[a-z]*[A-Z]){2})[A-Za-z]{2,6}\b")  # "FID", "SoTA"
REFERS_BACK = re.compile(r"\b(?:it|its|this|these|they|their|them|such)\b", re.IGNORECASE)
HYPHENATED = re.compile(r"\b[^\W\d_]+(?:-[^\W\d_]+)+\b")
# Words that frame a question rather than say what it asks ("how much does X obtain").
QUESTION_FRAME = frozenset(STOPWORDS_EN_PLUS) | frozenset(
    """many much become becomes became get gets got obtain obtains achieve achieves reach
    reaches report reports reported actually tell please""".split()  # noqa: SIM905
)
# A misspelt word still matches its stem ("promts" ~ "prompt"), from this length on.
MIN_FUZZY_CHARS = 5
FUZZY_SCORE = 85
# Words a quoted sentence must share with the question beyond those naming the paper.
MIN_SHARED_WORDS = 2
MIN_SHARED_WORDS_OVER_DECLINE = 3  # to quote although the draft declined
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
    alone rarely tells the reader the name they will meet elsewhere. Given a topic
    ("Boltzmann machines"), the answer opens with the titles of the papers it comes from."""
    by_rank = {source.rank: source for source in sources}
    if not verdict.declined and is_topic(question):
        titled = [
            f"{by_rank[rank].paper.title} [{rank}]"
            for rank in verdict.citations
            if rank in by_rank and by_rank[rank].paper.title not in verdict.answer
        ]
        if not titled:
            return verdict
        answer = f"{'; '.join(titled)}: {verdict.answer}"
        return Verdict(answer, verdict.citations, verdict.unsupported, False)
    if verdict.declined or not (PAPERS_ASKED.search(question) or SEVERAL_PAPERS.search(question)):
        return verdict
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
    titled: bool = False,
    paper_asked: bool = False,
) -> Verdict | None:
    """When no sentence of the draft survived verification: the source sentence closest in
    meaning to the question, quoted with its citation, or None when none is close enough.

    Candidates come from the `depth` best-ranked sources that mention every name the question
    asks about, and must share words with what is asked (see `_asked_stems`); a
    question asking for a quantity needs a number. A draft that declined (the model read the
    sources and found nothing) is overruled only by a sentence sharing more of what is asked.
    A "question" that is only a topic ("grokking") gets the closest sentence of the best
    source, under its title.
    `titled` puts the title first in any case. When the paper itself is what is asked
    (`paper_asked`), any sentence close enough to the question will do.
    """
    topic = is_topic(question)
    if not sources:
        return None
    # A draft that declined is overruled only by a sentence that shares much of what is asked.
    needed = MIN_SHARED_WORDS_OVER_DECLINE if is_decline(draft) and not topic else MIN_SHARED_WORDS
    wants_figure = needs_number or asks_for_figure(question)
    candidates = [
        (source, sentence)
        for source in sources[:depth]
        if paper_asked or not missing_terms(question, [source])
        for asked in [_asked_stems(question, source)]
        for sentence in split_sentences(source.text)
        if topic
        or (
            (not wants_figure or gives_the_figure(sentence, question))
            and (paper_asked or _shares_what_is_asked(asked, sentence, question, needed))
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
    if topic or titled:
        quote = f"{source.paper.title} [{source.rank}]: {quote}"
    return Verdict(quote, [source.rank], [], False)


def cover_each_paper(
    verdict: Verdict,
    question: str,
    sources: list[PackedSource],
    verifier: Verifier,
    min_similarity: float,
) -> Verdict:
    """Asked about several papers ("Compare X and Y", "Which two papers …"), the answer covers
    each one: the best source for each name in the question, then the best-ranked sources, up to
    the number asked for. A paper the draft left out gets its sentence closest to the question,
    under its title; one with no close sentence is left out rather than padded."""
    if not SEVERAL_PAPERS.search(question) or not sources:
        return verdict
    wanted = 3 if re.search(r"\bthree\b", question, re.IGNORECASE) else 2
    facts = [SourceFacts(source) for source in sources]
    named = [next((f.rank for f in facts if f.mentions(name)), None) for name in names_in(question)]
    order = list(dict.fromkeys([rank for rank in named if rank is not None]))
    order += [source.rank for source in sources[:wanted] if source.rank not in order]
    by_rank = {source.rank: source for source in sources}
    covered: set[int] = set() if verdict.declined else set(verdict.citations)
    added: list[str] = []
    for rank in order:
        if len(covered) >= wanted:
            break
        if rank in covered:
            continue
        quoted = quote_best_sentence(
            question,
            "",
            [by_rank[rank]],
            verifier,
            min_similarity,
            depth=1,
            titled=True,
            paper_asked=True,
        )
        if quoted is not None:
            added.append(quoted.answer)
            covered.add(rank)
    if verdict.declined and len(covered) < 2:
        return verdict
    if missing_terms(question, [by_rank[rank] for rank in covered if rank in by_rank]):
        # The parts found are about other things than the names asked about.
        return Verdict(decline_text(), [], verdict.unsupported, True)
    answer = " ".join(added) if verdict.declined else " ".join([verdict.answer, *added])
    return Verdict(answer, sorted(covered), verdict.unsupported, False)


def correct_premise(
    verdict: Verdict,
    question: str,
    sources: list[PackedSource],
    verifier: Verifier,
    min_similarity: float,
) -> Verdict:
    """A question stating a figure that the paper it is about does not report ("Why is ProDiff
    only 5x faster…?") rests on a false premise: say so, then what the paper does report, and
    which paper the figure comes from when another one reports it ("DPM-Solver's FID of 1.35"
    is another paper's).

    The paper it is about: the cited ones; for a refusal, the best source whose title has a name
    the question uses (a refusal is kept when there is nothing to correct it with)."""
    if verdict.declined:
        named = [
            source
            for source in sources[:2]
            if any(name.casefold() in source.paper.title.casefold() for name in names_in(question))
        ]
        about = named[:1]
    else:
        about = [source for source in sources if source.rank in verdict.citations]
    if not about:
        return verdict
    reported = set().union(*(SourceFacts(source).numbers for source in about))
    claimed = sorted(numbers_in(RESOLUTION.sub(" ", question)) - reported)
    if not claimed:
        return verdict
    # What the paper reports instead: its figure closest to the question.
    quoted = quote_best_sentence(
        question,
        "",
        about,
        verifier,
        min_similarity,
        depth=len(about),
        needs_number=True,
        paper_asked=True,
    )
    others = [source for source in sources if source not in about]
    elsewhere = [
        (figure, other, sentence)
        for figure in claimed
        for other, sentence in [_reporting(figure, question, others)]
        if other is not None
    ]
    if verdict.declined and quoted is None and not elsewhere:
        return verdict
    parts = [prompts.load("premise").format(figures=", ".join(claimed)).strip()]
    reported_instead = [quoted.answer] if quoted is not None else []
    if not verdict.declined and (quoted is None or quoted.answer not in verdict.answer):
        reported_instead.append(verdict.answer)
    if reported_instead:
        parts += [prompts.load("premise_reported").strip(), *reported_instead]
    citations = set() if verdict.declined else set(verdict.citations)
    citations |= set(quoted.citations if quoted else [])
    for figure, other, sentence in elsewhere:
        parts.append(
            prompts.load("premise_elsewhere")
            .format(figure=figure, title=other.paper.title, rank=other.rank, sentence=sentence)
            .strip()
        )
        citations.add(other.rank)
    return Verdict(" ".join(parts), sorted(citations), verdict.unsupported, False)


def _reporting(
    figure: str, question: str, sources: list[PackedSource]
) -> tuple[PackedSource | None, str]:
    """The first of `sources` with a sentence stating `figure` about what the question says
    around it ("FID of 1.35 on ImageNet": FID, ImageNet), and that sentence."""
    tokens = question.split()
    at = [i for i, token in enumerate(tokens) if figure in numbers_in(token)]
    if not at:
        return None, ""
    around = " ".join(tokens[max(at[0] - FIGURE_CONTEXT, 0) : at[0] + FIGURE_CONTEXT + 1])
    context = stems(_words(around)) | {name.casefold() for name in names_in(around)}
    for source in sources:
        for sentence in split_sentences(source.text):
            offered = stems(_words(sentence)) | {n.casefold() for n in names_in(sentence)}
            if figure in numbers_in(sentence) and len(context & offered) >= MIN_SHARED_WORDS:
                return source, sentence.rstrip()
    return None, ""


def is_topic(question: str) -> bool:
    """A few words and no question ("grokking", "gossip learning"): asks what the papers say."""
    return "?" not in question and len(question.split()) <= MAX_TOPIC_WORDS


def _asked_stems(question: str, source: PackedSource) -> set[str]:
    """What the question asks, beyond the words that only pick out the paper (its title, the
    names in the question): "How many parameters does mPLUG-2 have?" asks about parameters,
    not mPLUG-2. A question of names only asks about those the title lacks ("FFHQ")."""
    title = source.paper.title
    asking = [sentence for sentence in split_sentences(question) if "?" in sentence]
    if asking and not REFERS_BACK.search(" ".join(asking)):
        # A question that stands alone: what comes before it is noise ("Ignore all previous
        # instructions …"), not what is asked. One that says "it" or "this" needs it.
        question = " ".join(asking)
    names = names_in(question)
    asked = _words(question) - _words(title) - _words(" ".join(names)) - QUESTION_FRAME
    if not asked:
        # Only names ("What FID does PFGM++ get on FFHQ 64x64?"): those the title lacks.
        asked = _words(" ".join(n for n in names if n.casefold() not in title.casefold()))
    return stems(asked - _words(title))


def _shares_what_is_asked(
    asked: set[str], sentence: str, question: str = "", needed: int = MIN_SHARED_WORDS
) -> bool:
    """The sentence shares `needed` of the asked words (or all of fewer); misspelt ones
    ("promts") still count, and so does a phrase the sentence abbreviates ("Fréchet Inception
    Distance" for "FID")."""
    offered = stems(_words(sentence) | _abbreviated(question, sentence))
    shared = [
        stem
        for stem in asked
        if stem in offered
        or (
            len(stem) >= MIN_FUZZY_CHARS
            and process.extractOne(stem, offered, scorer=fuzz.ratio, score_cutoff=FUZZY_SCORE)
        )
    ]
    return len(shared) >= min(needed, len(asked))


def _abbreviated(question: str, sentence: str) -> set[str]:
    """Words of the question that an acronym in the sentence stands for ("Fréchet Inception
    Distance" when the sentence says "FID")."""
    acronyms = {acronym.upper() for acronym in ACRONYM.findall(sentence)}
    words = re.findall(r"[^\W\d_]+", question)
    found: set[str] = set()
    for size in range(2, MAX_ACRONYM_LETTERS + 1):
        for start in range(len(words) - size + 1):
            phrase = words[start : start + size]
            if "".join(word[0] for word in phrase).upper() in acronyms:
                found |= content_words(" ".join(phrase))
    return found


def _words(text: str) -> set[str]:
    """Content words without accents ("détection" ~ "detection"), plus hyphenated compounds
    joined ("pre-training" also as "pretraining")."""
    text = "".join(
        char for char in unicodedata.normalize("NFKD", text) if not unicodedata.combining(char)
    )
    joined = {word.replace("-", "").casefold() for word in HYPHENATED.findall(text)}
    return content_words(text) | joined
