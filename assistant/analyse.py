"""What a question asks, decided once: every step after it reads this object, none re-classifies.

`analyse` is the default analyser: rules over the question's words, plus an offline language
detector (lingua, whose models ship in its wheel). Another analyser (an LLM, a classifier) can
replace it as long as it returns a `QuestionAnalysis`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache, lru_cache
from typing import Any

from rapidfuzz import fuzz, process

from ingest.chunk import split_sentences

# Markup in a question is data: a whole <script>/<style> element or hidden element (what the
# user never saw), or any other tag.
MARKUP = re.compile(
    r"<(script|style)\b[^<>]{0,200}>.{0,2000}?</\1\s*>"
    r"|<(\w+)\b[^<>]{0,200}(?:display:\s*none|\bhidden\b)[^<>]{0,200}>.{0,2000}?</\2\s*>"
    r"|<[^<>]{0,200}>",
    re.IGNORECASE | re.DOTALL,
)
# Instructions around a question are addressed to the assistant, not asked of the papers: what
# follows a label like "Question:" is the question; sentences that try to change the
# assistant's rules or extract its prompt are dropped. The papers are searched, and the model
# prompted, with what is left.
QUESTION_LABEL = re.compile(
    r"^.*\b(?:question|then tell me|tell me|then answer|now answer|after that|answer this)\s*:\s*",
    re.IGNORECASE,
)
INSTRUCTION = re.compile(
    r"\b(?:ignore|disregard|forget)\b.{0,60}\b(?:instructions|rules|told|previous|above"
    r"|everything|documents)\b"
    r"|\b(?:print|paste|copy|dump|reveal|output|repeat)\b.{0,60}\b(?:system prompt|prompt"
    r"|instructions|configuration|documents?|api keys?)\b"
    r"|\b(?:developer|admin|debug|god) mode\b|\bsystem override\b"
    r"|\bcitations? (?:are|is) (?:now )?(?:disabled|off|switched off|turned off)\b"
    r"|\bwithout (?:citing|naming|mentioning) (?:any )?sources\b",
    re.IGNORECASE,
)
# Runs of ASCII letters and digits, never a piece of a word with accented Latin letters
# ("Rückwärts-KL" holds the name "KL", not "rts-KL"); scripts without spaces may touch them
# ("在LatentSync中").
LATIN_LETTER = "A-Za-zÀ-ÖØ-öø-ɏ"
TOKEN = re.compile(
    rf"(?<![{LATIN_LETTER}])(?:[A-Za-z0-9][A-Za-z0-9\-+.]*[A-Za-z0-9+]|[A-Za-z0-9])"
    rf"(?![{LATIN_LETTER}])"
)
# A figure as written: "24", "2.45", "245,000" (thousands), "1,35" (a decimal comma).
NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")
THOUSANDS = re.compile(r"^\d{1,3}(?:,\d{3})+$")
PAPER = r"(?:paper|work|study|article|publication|preprint|abstract)"
PAPERS_ONLY = r"(?:papers|works|studies|articles|publications)"
PAPERS = r"(?:papers|works|studies|articles|publications|methods|approaches|ones)"
NAME_A_PAPER = rf"name (?:the|a|one) {PAPER}\b"
SENTENCE_START = r"(?:^|[.?!;:]\s+)"
WHICH_PAPER = re.compile(
    rf"\b(?:which|what)\s+(?:\w+\s+){{0,2}}?{PAPER}\b|\b{NAME_A_PAPER}"
    rf"|\bis there an? {PAPER}\b|\b(?:which|what) (?:method|approach|model|framework|system"
    r"|technique|benchmark|dataset)\b[^?]{0,80}(?<!the )(?<!their )(?<!its )(?<!our )"
    r"\b(?:propos|introduc|present)",
    re.IGNORECASE,
)
# "Which paper …?" opening a question asks for one paper, however its description contrasts
# things ("… weights forward versus reverse KL", "… the difference between fine-tuned and
# pre-trained weights").
ONE_PAPER_ASKED = re.compile(
    rf"{SENTENCE_START}(?:which|what)\s+(?:(?!each\b|{PAPERS_ONLY}\b)\w+\s+){{0,2}}?{PAPER}\b"
    rf"(?![^?]*\beach\b)|{SENTENCE_START}{NAME_A_PAPER}",
    re.IGNORECASE,
)
# Asked to compare ("Compare …", "How do A and B compare?"): several papers. "Compare" as what a
# paper does ("the study comparing …", "which baseline does it compare against?", "… compared
# with training from scratch") asks about one.
COMPARISON = re.compile(
    rf"\b(?:two|three|both|several)\s+(?:[\w-]+\s+){{0,2}}?{PAPERS}\b"
    rf"|\b(?:which|what)\s+{PAPERS_ONLY}\b"
    rf"|{SENTENCE_START}(?:(?:please|(?:can|could|would) you(?: please)?)\s+)?compare\b"
    r"|\bhow\s+(?:do|does|did)\b[^?]*\bcompare\b"
    r"|\bcomparison (?:of|between)\b"
    r"|\bdiffer(?:s|ences?)?\b.*\b(?:from|and)\b|\b(?:how|where|why) do\b.*\band\b.*\bdiffer\b"
    r"|\bversus\b"
    r"|\bvs\.?\s|\bcontrast\b"
    # "There is A, and B. What does each find about …?" asks of several papers; "what does
    # each stage learn?" asks of the parts of one.
    r"|\bwhat (?:does|do|did) each\s+(?:(?:one|of them)\s+)?\w+(?:\s*[?,.;:!]|\s*$"
    r"|\s+(?:about|to|from|for|as|in|on|with|and|or)\b)"
    # "… what does each paper propose?", "A and B both …: how does each approach it?"
    rf"|\beach\s+{PAPER}\b"
    # "How do these two … schemes work?" points at papers the asker goes on to describe ("the
    # two" often counts parts of one: "What are the two main components …?"); "… according to
    # one paper, and how much does another gain …?"
    r"|\bthese\s+(?:two|three)\b"
    rf"|\bone\s+{PAPER}\b[^?]*\b(?:another|the other)\b"
    r"|\bboth\b[^?.!]*\b(?:how|what)\s+(?:[\w-]+\s+){0,2}?(?:does|do|did)\s+each\b",
    re.IGNORECASE,
)
COUNT = re.compile(r"\bhow many\b|\bnumber of\b", re.IGNORECASE)
# What a figure measures, as a question names it ("what batch size", "which FID").
MEASURE_WORDS = (
    r"(?:size|rate|length|dimension\w*|count|score|accuracy|fid|perplexity|latency|throughput"
    r"|ratio|budget|speed-?up|decay|dropout|momentum|temperature|epochs|resolution|rank(?!-))"
)
IS_THE = r"(?:(?:is|are|was|were)\s+(?:the|its|their)\s+)?"  # "what is its average latency"
# Nouns that ask for a figure without naming what it measures ("what share of the compute",
# "what average relative improvement"): a change asks for one only when a word says it is a
# quantity ("what improvement does X bring" may ask for a method).
QUANTITY_NOUNS = (
    r"(?:share|proportion|portion|percentage|fraction|margin)s?\b"
    r"|(?:relative|average|mean|absolute|overall)\s+"
    r"(?:improvement|gain|reduction|increase|decrease|saving|speed-?up|boost|drop)s?\b"
)
FIGURE = re.compile(
    r"\bhow (?:much|fast|long|large|big|often|many times|accurate|high|low)\b"
    r"|\bby (?:how much|what (?:[\w-]+ )?(?:factor|margin|percentage))|\bwhat (?:speed-?up|factor)\b"
    rf"|\b(?:what|which) {IS_THE}(?:[\w-]+ ){{0,2}}{MEASURE_WORDS}\b"
    rf"|\b(?:what|which) (?:[\w-]+ ){{0,2}}(?:{QUANTITY_NOUNS})",
    re.IGNORECASE,
)
COUNTED = re.compile(r"\bhow many\s+((?:[\w-]+\s*){1,2})", re.IGNORECASE)
# "What batch size …", "which learning rate …": the measure a figure question asks for.
MEASURE = re.compile(
    rf"\b(?:what|which)\s+{IS_THE}((?:[\w-]+\s+){{0,2}}?{MEASURE_WORDS})\b",
    re.IGNORECASE,
)
FUNCTION_WORDS = frozenset(
    """were was are is does do did have has had can could would will in on per of the a an
    different total distinct over for to with at by from that which when used""".split()  # noqa: SIM905
)
MAX_MEASURE_WORDS = 3
MAX_KIND_WORDS = 4  # "which pretrained large vision network"
# "Which two fundamental questions …", "on which benchmark problems …": the kind of thing a
# question asks for, which the sentence answering it names.
KIND_ASKED = re.compile(
    r"(?:^\s*(?:name|list)\s+(?:the|all|its|their)\s+|\b(?:what|which)\s+)"
    r"(?:is\s+the\s+name\s+of\s+(?:the|its|their|this|that)\s+)?"
    r"(?:(?:two|three|four|main|key|specific|particular)\s+)?([\w-]+)",
    re.IGNORECASE,
)
UNNAMED_KINDS = frozenset("kind kinds type types sort sorts".split())  # noqa: SIM905
# Things known by a proper name ("which datasets", "what GPU"), singular: an answer names one.
NAMED_KINDS = frozenset(
    "dataset benchmark corpus corpora gpu hardware accelerator library libraries toolkit"  # noqa: SIM905
    " optimizer optimiser simulator checkpoint backbone family families pretrained pre-trained"
    " software programming".split()
)
# A name of a known kind stands beside a word for it ("the CIFAR-10 dataset", "an A100 GPU"),
# a word of one group for another's: a checkpoint or a model family is named beside "model"
# ("Llama, Mistral and Phi models"), a test set beside "benchmark", a GPU beside "card".
# An optimizer is named alone ("trained with Adam"); "pretrained" says no kind.
NAMED_WITHOUT_KIND_WORD = frozenset({"optimizer", "optimiser", "pretrained", "pre-trained"})
KIND_WORD_GROUPS = tuple(
    frozenset(group.split())
    for group in (
        "model models network networks checkpoint checkpoints backbone backbones family families"
        " llm llms transformer transformers",
        "dataset datasets benchmark benchmarks corpus corpora suite collection",
        "gpu gpus hardware accelerator accelerators card cards",
    )
)
# A framework the paper proposes is its own ("which framework does it introduce"), a deep
# learning one is a library known everywhere by its name.
NAMED_KIND_PHRASES = ("learning framework", "learning library")
# "What is the name of …", "what is the variant called?": a name asked for in so many words
# ("called" followed by its name is a description: "the method called MKOR").
NAME_ASKED = re.compile(
    r"\b(?:what|which)\b[^?]*?\bcalled\b(?!\s+(?-i:[A-Z\"“']))|\bwhat is the name\b|\bwhat name\b",
    re.IGNORECASE,
)
GENERIC_MEASURES = frozenset({"number", "numbers", "value", "values", "figure", "figures"})
QUESTION_WORD = re.compile(
    r"^\s*(?:what|which|how|why|who|when|where|does|do|did|is|are|can|name|list|give|tell)\b",
    re.IGNORECASE,
)
MAX_TOPIC_WORDS = 4
MODIFIER = re.compile(
    r"-(?:style|like|based|type|sized|scale|level|derived|inspired|driven|guided|specific|aware)$",
    re.IGNORECASE,
)
# A size ("64B", "sub-11B": a bound on it), a dimension ("3-D"), or how many of a thing a
# setting has ("multi-GPU clusters", "single-GPU"): a paper may say "eight GPUs" instead.
NOT_A_NAME = re.compile(
    r"^(?:(?:sub|over|under|above|below)-)?\d+(?:\.\d+)?[BMKT]$|^\d+-?D$"
    r"|^(?:multi|single)-(?-i:[A-Z]{2,}s?)$",
    re.IGNORECASE,
)
NAME_MATCH_SCORE = 85  # rapidfuzz ratio: tolerates typos like "ProDif"
MIN_NAME_CHARS = 3  # an acronym this short ("TI") is the initials of too many pairs of words
DIMENSION = re.compile(r"\b\d-?D\b|\(\d\)", re.IGNORECASE)  # "3D"; the enumerator "(1)"
# Figures written as words ("seven benchmark datasets", "twice as fast").
FIGURE_WORD = re.compile(
    r"\b(?:two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|dozens?|twenty|thirty"
    r"|forty|fifty|hundreds?|thousands?|millions?|billions?|half|twice|double|triple)\b",
    re.IGNORECASE,
)
# "the two" points back at things already named: it counts nothing new.
COUNTING_WORD = re.compile(rf"(?<![Tt]he ){FIGURE_WORD.pattern}", re.IGNORECASE)
# When a paper appeared: a year is the figure asked for, whatever words stand beside it.
YEAR_ASKED = re.compile(
    r"\b(?:which|what) year\b|\bwhen (?:was|were|did)\b[^?]{0,80}\b(?:publish|releas|present"
    r"|introduc|propos|appear)",
    re.IGNORECASE,
)
YEAR = "year"
A_YEAR = re.compile(r"(?<!\d)(?:19|20)\d\d(?!\d)")
# "Who wrote …", "the first author of …", "which lab developed …"; not "what do the authors find".
AUTHORS_ASKED = re.compile(
    r"\bwho\s+(?:wrote|authored|came\s+up\s+with|invented|(?:are|were|is|was)\s+(?:the\s+)?"
    r"(?:\w+\s+)?(?:authors?|writers?|researchers?|people|team)\b)"
    r"|\b(?:first|last|lead|senior|corresponding)\s+author\b|\bpeople\s+behind\b|\bby\s+whom\b"
    r"|\bwhose\s+(?:work|paper|research|study|article|idea)\s+(?:is|was)\b"
    r"|\b(?:name|list|tell\s+me|give\s+me|(?:who|what)\s+(?:are|were))\s+(?:\w+\s+){0,2}authors?\b"
    r"(?!['’]|\s+(?:find|found|claim|show|propos|report|us|argu|say|stat|conclu|observ|suggest"
    r"|mean|do|did|think|recommend|introduc|present|develop|describ|measur|evaluat|test|achiev))"
    r"|\b(?:which|what)\s+(?:research\s+)?(?:group|lab|laboratory|team|university|institution"
    r"|institute)\b[^?]{0,60}\b(?:developed|created|wrote|behind|from|built|published|released)\b"
    r"|\baffiliations?\b",
    re.IGNORECASE,
)
VENUE_ASKED = re.compile(
    r"\b(?:which|what)\s+(?:conference|journal|venue|workshop|proceedings)\b"
    r"|\b(?:published|presented|appeared?)\s+(?:at|in)\s+(?:which|what)\b"
    r"|\bwhere\s+(?:was|were|did|is|has)\b[^?]{0,80}\b(?:publish|appear|presented)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RecordItem:
    """Who wrote a paper, where or when it appeared: its record, not its abstract's. Asked for,
    it must be stated as such (the record's "authors: …", an abstract's "accepted at …"), never
    read off a sentence about its content (an abstract's "Ho et al." are other authors)."""

    asked: re.Pattern[str]  # how a question asks for it
    fields: tuple[str, ...]  # the record's fields that hold it (a JSONL corpus's extra fields)
    in_text: re.Pattern[str] | None  # how an abstract may state it, where it can


RECORD = {
    YEAR: RecordItem(YEAR_ASKED, ("year", "date", "published"), A_YEAR),
    "authors": RecordItem(AUTHORS_ASKED, ("authors", "author"), None),
    "venue": RecordItem(
        VENUE_ASKED,
        ("venue", "journal", "conference", "booktitle"),
        re.compile(
            r"\b(?:accepted|published|appear(?:s|ed)?|presented)\s+(?:at|in)\b|\bproceedings\b",
            re.IGNORECASE,
        ),
    ),
}


def record_sentences(metadata: Mapping[str, object], analysis: QuestionAnalysis) -> list[str]:
    """The paper's record, as evidence sentences ("authors: A; B."), for a question that asks
    for it (or for one of the things it asks): an abstract rarely says who wrote it or where it
    appeared."""
    given = {key.casefold(): value for key, value in metadata.items() if value not in (None, "")}
    asked = dict.fromkeys([analysis.measure, *(part.measure for part in analysis.asked)])
    fields = [key for measure in asked if measure in RECORD for key in RECORD[measure].fields]
    return [f"{key}: {given[key]}." for key in fields if key in given]


def from_the_record(sentence: str, analysis: QuestionAnalysis) -> bool:
    """`sentence` is the paper's record of what `analysis` asks (see `record_sentences`)."""
    item = RECORD.get(analysis.measure)
    return item is not None and any(sentence.startswith(f"{key}: ") for key in item.fields)


FACTOR = re.compile(r"^\S*?\d(?:x|×|times|-?fold)\b|^\S+\s+(?:x|×|times|-?fold)\b", re.IGNORECASE)
RESOLUTION = re.compile(r"\b\d+\s*[x×]\s*\d+\b")  # "256x256" names a dataset's size
# A size as an abstract may write it: "256 × 256", "64times 64", "64{times}64" (LaTeX, flattened).
SIZE = re.compile(r"(?<![\w.])(\d+)\s*(?:[x×]|\{?times\}?)\s*(\d+)(?![\w.])", re.IGNORECASE)
# "Compare the best FID of …", "contrast the speedups …": the measure a comparison is about.
COMPARED_MEASURE = re.compile(
    rf"\b(?:compar\w*|contrast\w*)\s+(?:the\s+|their\s+)?(?:[\w-]+\s+){{0,3}}?({MEASURE_WORDS}s?)\b",
    re.IGNORECASE,
)
# A comparison that describes each paper apart: "one adds momentum, the other plays a game",
# "the first …; the second …", "One adds momentum. Meanwhile, the other plays a game."…
ONE_AND_OTHER = re.compile(
    r"\b(?:one|the first)\s+(?P<first>[^?;]+?)\s*(?:[,;.]|\band\b|\bwhile\b|\bwhereas\b)\s*"
    r"(?:and\s+|meanwhile,?\s+)?(?:the other|another|one|the second)\s+(?P<second>[^.?;]+)",
    re.IGNORECASE,
)
A_PAPER = re.compile(
    rf"\b(?:a|an|the|this|that)\s+(?!other\b|first\b|second\b)(?:[\w-]+\s+){{0,2}}?{PAPER}\b",
    re.IGNORECASE,
)
# … or "compare A and/with B", "compare what A found with what B found", "how do A and B
# differ": split where the second begins.
PAIR_OPENER = re.compile(
    r"^\s*(?:compare|contrast|how (?:do|does|did)|what (?:is|are) the differences? between)\b",
    re.IGNORECASE,
)
SECOND_OF_PAIR = re.compile(
    r"\s(?:and|with|versus|vs\.?|against)\s+(?=(?:by |of |for |what )?(?:the|a|an) )"
    r"|\s(?:and|versus|vs\.?)\s+(?=by )",
    re.IGNORECASE,
)
# "…, and what Dice score …", "… and into which family …": a further question about the same
# paper begins.
FURTHER_QUESTION = re.compile(
    r",?\s+and\s+(?=(?:(?:in|into|on|to|for|from|by|with|at|of)\s+)?"
    r"(?:what|which|how|where|who|when|why)\b)",
    re.IGNORECASE,
)
MIN_PART_WORDS = 3
# "…, and what does each propose?", "Which are they?", "how do their approaches differ?": what a
# comparison asks of every paper alike, so it cannot tell the papers apart.
ASKED_OF_EACH = re.compile(
    r"^\W*(?:(?:in|on|to|for|from|by|with|about)\s+)?(?:what|which|how|whether)\b"
    r"(?:\s+(?:are they|ones|each)\b|.*\b(?:do|does|did)\s+(?:each|they|both|their)\b"
    r"|.*\beach\s+(?:one|paper|work|study|of them)\b)",
    re.IGNORECASE,
)
MIN_DESCRIBED_WORDS = 4
# The direction a figure is stated with, by axis: "FID 5.2% worse" and "improving its FID by
# 5.2%" are opposite; "reduce … by 3x" and "worse by 3x" are on different axes, not compared.
DIRECTIONS = {
    ("amount", 1): "increase increases increased increasing raise raises raised higher larger grow"
    " grows grew growth rise rises rose",
    ("amount", -1): "reduce reduces reduced reducing reduction reductions decrease decreases"
    " decreased decreasing lower lowers lowered lowering fewer smaller cut cuts shrink shrinks"
    " drop drops dropped",
    ("quality", 1): "improve improves improved improving improvement improvements better gain"
    " gains outperform outperforms outperforming",
    ("quality", -1): "worse worsen worsens worsened degrade degrades degraded degrading degradation"
    " hurt hurts harm harms deteriorate deteriorates deteriorated lose loses lost losing",
    ("speed", 1): "faster quicker speedup speedups accelerate accelerates",
    ("speed", -1): "slower slowdown slowdowns slows",
}
DIRECTION_WORDS = {word: way for way, words in DIRECTIONS.items() for word in words.split()}
DIRECTION_REACH = 8  # words between a figure and the word that gives its direction, in a clause
CLAUSE_BREAK = re.compile(r"[,;:()]|\b(?:while|whereas|but)\b", re.IGNORECASE)
# "In the study where …, what …?", "A video generator splits … . What technique …?": what is
# asked follows the description that finds the paper. Sentences are chosen for what is asked,
# which the description's words would otherwise outweigh. A setting before the question ("On
# Llama 2-7B, …", "With T5-Base, …") is part of what is asked, not a description.
# (After a comma, "who", "whose", "where" and "when" begin a relative clause of the description.)
ASKING = (
    r"(?:(?:on|in|at|for|with|by|to|from|under|of)\s+(?=what|which|how))?"  # "On what data …?"
    r"(?:what|which|how|why|is|are|was|were|does|do|did|can|could|has|have|had|will|would|should)\b"
)
A_QUESTION = re.compile(rf"^\W*{ASKING}", re.IGNORECASE)  # "under which conditions does …"
DESCRIBED_FIRST = re.compile(
    rf"^(?:in|for|within|according to|regarding|about|among|from)\b[^?;]{{8,}}?,\s+"
    rf"(?={ASKING})|^[^?]{{8,}}?[.;:]\s+(?=(?:{ASKING}|who|whose|when|where))",
    re.IGNORECASE,
)
NUMBER_OF_PAPERS = {"two": 2, "both": 2, "three": 3}
PAPERS_COUNTED = re.compile(
    rf"\b({'|'.join(NUMBER_OF_PAPERS)})\s+(?:[\w-]+\s+){{0,2}}?{PAPERS}\b", re.IGNORECASE
)
# "Which papers …" asks for all that answer, a number of them when it says so.
ANY_NUMBER_OF_PAPERS = re.compile(rf"\b(?:which|what)\s+{PAPERS_ONLY}\b", re.IGNORECASE)
# "what does each …", "how do their …", "what does the first …": asks of the papers compared.
OF_THE_PAPERS = re.compile(
    r"\b(?:each|both|they|their|them|two|three|the (?:first|second|third|former|latter|other))\b",
    re.IGNORECASE,
)
# "Which two papers …", "Which are they?": asks for the papers, not of them.
WHICH_PAPERS = re.compile(
    rf"\b(?:which|what)\s+(?:[\w-]+\s+)?{PAPERS_ONLY}\b|^\W*which\s+(?:are they|ones)\b",
    re.IGNORECASE,
)


class Asks(StrEnum):
    FIGURE = "figure"  # a quantity: "how fast", "what FID"
    COUNT = "count"  # "how many"
    WHICH_PAPER = "which_paper"  # the answer is a paper
    COMPARISON = "comparison"  # several papers at once
    TOPIC = "topic"  # a few words, no question: what do the papers say
    FACT = "fact"  # anything else


@dataclass(frozen=True)
class QuestionAnalysis:
    text: str  # the question without markup: what is asked
    language: str = "English"
    asks: Asks = Asks.FACT
    names: tuple[str, ...] = ()  # name-like terms: acronyms, CamelCase, names with digits
    figures: tuple[str, ...] = ()  # figures the question states (premises to check)
    counted: frozenset[str] = field(default_factory=frozenset)  # stems of `measure`
    measure: str = ""  # what a figure question counts or measures, as asked: "3D volumes"
    papers_wanted: int = 1
    # A comparison's description of each paper, where it describes them apart.
    parts: tuple[str, ...] = ()
    # Each thing a question asks of one paper, where it asks several ("which dataset …, and
    # what Dice score …"), analysed apart.
    asked: tuple[QuestionAnalysis, ...] = ()
    focus: str = ""  # what is asked without the description before it ("": all of `text`)
    # A comparison without what it asks of each paper alike: how it describes the papers.
    compared: str = ""
    # What a comparison asks of the papers, without how it describes them ("What does each
    # conclude about …?"; "" when it does not ask apart from describing).
    ask: str = ""
    kind: str = ""  # what a question asks for by its kind: "fundamental questions"

    @property
    def wants_a_name(self) -> bool:
        """Asked for a thing known by its name ("which datasets", "what GPU"), or for a name."""
        return self.asks_a_known_kind or self.asks_the_name

    @property
    def asks_a_known_kind(self) -> bool:
        """Asked for a thing of a kind known by names others gave it ("which datasets", "what
        GPU", "the name of the dataset"), not by one the paper coins."""
        return bool(self._named_kind_words)

    @property
    def kind_words(self) -> frozenset[str]:
        """The stems of the words that say the known kind asked ("which image datasets" →
        "dataset", "benchmark", …; see `KIND_WORD_GROUPS`): a name elsewhere in a sentence
        than beside one is another thing's. Empty for kinds named alone ("trained with Adam")
        and for questions asking no known kind."""
        heads = self._named_kind_words - NAMED_WITHOUT_KIND_WORD
        for group in KIND_WORD_GROUPS:
            if heads & group:
                heads |= group
        return frozenset(stems(set(heads)))

    @property
    def _named_kind_words(self) -> frozenset[str]:
        """The words of `kind` that are kinds known by name ("datasets" of "image datasets";
        "library" of "deep learning library")."""
        words = {word.casefold() for word in self.kind.split()}
        phrase = self.kind.casefold()
        return frozenset(
            {word for word in words if {word, word.removesuffix("s")} & NAMED_KINDS}
            | {known.split()[-1] for known in NAMED_KIND_PHRASES if known in phrase}
        )

    @property
    def asks_the_name(self) -> bool:
        """Asked what something is called: the paper's own coined names answer it."""
        return self.asks == Asks.FACT and bool(NAME_ASKED.search(self.focus or self.text))

    @property
    def wants_figure(self) -> bool:
        return self.asks in (Asks.FIGURE, Asks.COUNT)

    @property
    def description(self) -> str:
        """How the question describes the paper, before what it asks ("" without a focus)."""
        return self.text[: len(self.text) - len(self.focus)] if self.focus else ""


Analyser = Callable[[str], QuestionAnalysis]


def analyse(question: str) -> QuestionAnalysis:
    text = asked_question(" ".join(MARKUP.sub(" ", question).split()) or question)
    language = language_of(text)
    several = _several_asked(text)
    record = next((measure for measure, item in RECORD.items() if item.asked.search(text)), "")
    if any(part.measure not in RECORD for part in several):
        record = ""  # "What does X do, and who wrote it?": the record is one thing it asks
    # A description before the question is how the asker finds the paper, not what they ask:
    # "the work weighting errors by how much they change the return, which setting …?"
    focus = focus_of(text)
    measure = record or _measure(focus or text)
    kind = _asks(text)
    if focus and kind not in (Asks.COMPARISON, Asks.TOPIC):
        kind = _asks(focus)
    # A paper's record is asked of the one paper a description finds ("the study comparing …").
    asks = Asks.FIGURE if record else kind
    return QuestionAnalysis(
        text=text,
        language=language,
        asks=asks,
        # A size the question states ("on ImageNet 512x512") is a setting, asked about like a name:
        # a figure for another size answers another question.
        names=tuple(dict.fromkeys([*names_in(text), *sizes_in(RESOLUTION.findall(text))])),
        figures=tuple(sorted(numbers_in(RESOLUTION.sub(" ", without_names(text)), language))),
        counted=frozenset(word_stems(measure)),
        measure=measure,
        papers_wanted=_papers_wanted(text),
        parts=comparison_parts(text) if asks == Asks.COMPARISON else (),
        compared=compared_papers(text) if asks == Asks.COMPARISON else "",
        ask=asked_of_papers(text) if asks == Asks.COMPARISON else "",
        asked=several if asks in (Asks.FACT, Asks.FIGURE, Asks.COUNT) else (),
        focus=focus if asks not in (Asks.COMPARISON, Asks.TOPIC) else "",
        kind=_kind(focus or text) if asks == Asks.FACT else "",
    )


def is_question(text: str) -> bool:
    return text.rstrip().endswith(("?", "？"))


def focus_of(text: str) -> str:
    """What `text` asks, when a description of the paper comes before it ("" otherwise)."""
    described = DESCRIBED_FIRST.match(text)
    if described is None or len(text[described.end() :].split()) <= MIN_PART_WORDS:
        return ""
    return text[described.end() :]


def asked_question(text: str) -> str:
    """`text` without the instructions around the question (see `INSTRUCTION`)."""
    labelled = QUESTION_LABEL.sub("", text).strip()
    text = labelled if len(labelled.split()) >= MIN_PART_WORDS else text
    kept = [sentence for sentence in split_sentences(text) if not INSTRUCTION.search(sentence)]
    return " ".join(kept) if kept else text


def _several_asked(text: str) -> tuple[QuestionAnalysis, ...]:
    """The questions a question joins with "and" ("…, and what Dice score did it reach?"),
    each analysed; empty when it asks one thing."""
    pieces = FURTHER_QUESTION.split(text)
    if len(pieces) < 2 or any(len(piece.split()) < MIN_PART_WORDS for piece in pieces):
        return ()
    return tuple(analyse(piece) for piece in pieces)


def _papers_wanted(text: str) -> int:
    """How many papers a comparison answers from: as many as it says, else two, or up to
    three for "which papers …" (only those on point are kept)."""
    said = PAPERS_COUNTED.search(text)
    if said:
        return NUMBER_OF_PAPERS[said.group(1).casefold()]
    return 3 if ANY_NUMBER_OF_PAPERS.search(text) else 2


def comparison_parts(text: str) -> tuple[str, ...]:
    """What a comparison says of each paper, each a query of its own: "Two papers do X, one
    for BERT and one for diffusion" → "Two papers do X for BERT", "Two papers do X for
    diffusion"; "Compare the FID of A with the speed of B" → its halves. Empty when the
    question describes the papers together ("Which papers study X?")."""
    one = ONE_AND_OTHER.search(text)
    if one:
        head = text[: one.start()].rstrip(" ,:;")
        return (f"{head} {one['first']}", f"{head} {one['second']}")
    if PAIR_OPENER.search(text):
        halves = SECOND_OF_PAIR.split(text, maxsplit=1)
        if len(halves) == 2 and all(len(half.split()) >= 2 for half in halves):
            return (halves[0].strip(), halves[1].strip())
    return ()


def question_pieces(text: str) -> list[str]:
    """`text` cut into its sentences, their clauses after ":" or ";", and the further questions
    they join ("…, and what does each propose?")."""
    return [
        piece
        for sentence in split_sentences(text)
        for clause in re.split(r"(?<=[:;])\s+", sentence)
        for piece in FURTHER_QUESTION.split(clause)
        if piece.strip()
    ]


def compared_papers(text: str) -> str:
    """A comparison without what it asks of each paper alike ("Two papers study X. What does
    each conclude?" → "Two papers study X."): "" when it asks nothing of them all, or when
    too little is left to find papers by."""
    pieces = question_pieces(text)
    kept = [piece for piece in pieces if not ASKED_OF_EACH.search(piece)]
    if len(kept) == len(pieces) or len(" ".join(kept).split()) < MIN_DESCRIBED_WORDS:
        return ""
    return " ".join(kept)


def asked_of_papers(text: str) -> str:
    """What a comparison asks of the papers it describes: its pieces that are questions about
    them, but not those asking which papers ("Which two papers study X, and what does each
    find?" → "what does each find?"); "" when every piece asks or none does. A question
    about one of them ("What accuracy did X get in that comparison?") asks a fact."""
    pieces = question_pieces(text)
    asking = [
        piece
        for piece in pieces
        if A_QUESTION.match(piece)
        and OF_THE_PAPERS.search(piece)
        and not WHICH_PAPERS.search(piece)
    ]
    if not asking or len(asking) == len(pieces):
        return ""
    return " ".join(asking)


def _asks(text: str) -> Asks:
    # Two things described apart and asked of ("I read about two ways …: one …, the other ….
    # What does the first report?") are papers compared, whatever they are called, unless
    # they are parts of a paper ("A paper trains in two stages: the first …, the second …").
    compares = COMPARISON.search(text) or (
        ONE_AND_OTHER.search(text) and asked_of_papers(text) and not A_PAPER.search(text)
    )
    if compares and not ONE_PAPER_ASKED.search(text):
        return Asks.COMPARISON
    if (
        not {"?", "？"} & set(text)
        and len(text.split()) <= MAX_TOPIC_WORDS
        and not QUESTION_WORD.match(text)
    ):
        return Asks.TOPIC
    if WHICH_PAPER.search(text):
        return Asks.WHICH_PAPER
    if COUNT.search(text) and not re.search(r"\bhow many times\b", text, re.IGNORECASE):
        return Asks.COUNT
    if FIGURE.search(text) or COUNT.search(text):
        return Asks.FIGURE
    return Asks.FACT


def _measure(text: str) -> str:
    """What "how many …" counts or "what …" measures: its next words up to a function word
    ("how many V100 GPUs were" → "V100 GPUs"); nothing for "how many times"."""
    match = COUNTED.search(text) or MEASURE.search(text)
    if match is None:
        compared = COMPARED_MEASURE.search(text)
        return compared.group(1) if compared else ""
    words = [w for w in _words_from(text, match.start(1)) if w.casefold() not in GENERIC_MEASURES]
    return "" if words[:1] == ["times"] else " ".join(words)  # "how many times faster"


def _words_from(
    text: str, start: int, stop: frozenset[str] = FUNCTION_WORDS, most: int = MAX_MEASURE_WORDS
) -> list[str]:
    """The words of `text` from `start` up to a `stop` word, at most `most`."""
    words = []
    for word in text[start:].split()[:most]:
        word = word.strip("?？,.;:!")
        if not word or word.casefold() in stop:
            break
        words.append(word)
    return words


def _kind(text: str) -> str:
    """The words after "which" or "what" up to a function word ("which two sources of data"
    → "sources"), when they name a kind of thing ("" for "what does", "what kind of")."""
    match = KIND_ASKED.search(text)
    if match is None:
        return ""
    words = _words_from(text, match.start(1), FUNCTION_WORDS | {"and", "or"}, MAX_KIND_WORDS)
    return "" if not words or words[0].casefold() in UNNAMED_KINDS else " ".join(words)


ADDRESS = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
# A capitalised word after a lower-case one: a name ("compared with Adam"), not a sentence's start.
CAPITALISED_INSIDE = re.compile(r"(?<=[a-z0-9,] )[A-Z][a-z][\w-]*")


def proper_names(text: str, context: str = "") -> list[str]:
    """The names a text gives things: name-like terms, and capitalised words inside a sentence
    ("compared with Adam", "on Wikipedia"); not kinds of things ("LLMs"), nor the short forms
    `context` defines ("chain-of-thought (CoT)", "Error Compensation (EC)"): the papers' terms and
    methods, where a dataset, a GPU or a library goes by the name it has everywhere."""
    text = ADDRESS.sub(" ", text)  # "github.com/thuml/Latent-Spectral-Models" names no tool
    found = names_in(text) + CAPITALISED_INSIDE.findall(text)
    defined = _defined_terms(context)
    return [
        name
        for name in found
        if name not in defined
        and not PLURAL_ACRONYM.match(name)
        and not _spelled_out(name, context)
    ]


def _spelled_out(name: str, context: str) -> bool:
    """An acronym whose letters begin consecutive words of `context` ("RL" where it says
    "reinforcement learning" anywhere, brackets or not): the text's term, not a name."""
    return bool(ACRONYM.fullmatch(name)) and name.casefold() in _initials(context)


@lru_cache(maxsize=256)  # one abstract, asked of each of its sentences
def _defined_terms(context: str) -> frozenset[str]:
    """The short forms `context` defines, with the words they stand for."""
    forms = short_forms(context)
    return frozenset({*forms, *(word for phrase in forms.values() for word in phrase.split())})


@lru_cache(maxsize=256)
def short_forms(context: str) -> dict[str, str]:
    """The short forms `context` defines, each with the words it stands for ("Error
    Compensation (EC)" → {"EC": "Error Compensation"}; the word before it if they do not spell
    it)."""
    forms: dict[str, str] = {}
    for match in ABBREVIATED.finditer(context):
        short = match.group(2)
        words = match.group(1).split()
        forms[short] = " ".join(_abbreviated_phrase(words, short) or words[-1:])
    return forms


def states_a_figure(text: str) -> bool:
    """A figure, in digits or words, that is not part of a name."""
    plain = without_names(text)
    return bool(numbers_in(plain) or FIGURE_WORD.search(plain))


def missing_names(names: Iterable[str], texts: Iterable[str]) -> list[str]:
    """The names no one of `texts` mentions."""
    texts = list(texts)
    return [name for name in names if not any(mentions(text, name) for text in texts)]


def gives_the_figure(sentence: str, analysis: QuestionAnalysis) -> bool:
    """The sentence states a figure of the kind asked, in the question's words: for "how many
    3D volumes …?", a number and "3D volumes" (in words too: "seven datasets"), not "5.7 days"
    nor "3D features". (The measure in other words is judged by meaning: `beside_figures`.)"""
    plain = without_names(sentence)
    if analysis.measure in RECORD:
        in_text = RECORD[analysis.measure].in_text
        return from_the_record(sentence, analysis) or bool(in_text and in_text.search(plain))
    if not (numbers_in(plain) or (analysis.asks == Asks.COUNT and COUNTING_WORD.search(plain))):
        return False
    return analysis.counted <= word_stems(sentence)


def beside_figures(sentence: str, counts: bool = False, reach: int = 3) -> list[str]:
    """The phrases around each figure of a sentence, the figures left out ("FID scores of 2.51"
    → "FID scores of", "scores of", …): where a sentence says what it measures. With `counts`,
    only counts of things: "2 times faster" and "10x" are factors, not how many of anything."""
    tokens = sentence.split()
    figures = [_is_figure(token) for token in tokens]
    anchors = [
        i
        for i, figure in enumerate(figures)
        if figure and not (counts and FACTOR.search(" ".join(tokens[i : i + 2])))
    ]
    phrases: dict[str, None] = {}
    for index in anchors:
        for start in range(max(0, index - reach), index + 1):
            for end in range(index + 1, min(len(tokens), index + reach + 1) + 1):
                words = [tokens[i] for i in range(start, end) if not figures[i]]
                if words:
                    phrases[" ".join(words)] = None
    return list(phrases)


def _is_figure(token: str) -> bool:
    word = token.strip(",.;:()[]")
    return bool(FIGURE_WORD.fullmatch(word) or (numbers_in(word) and not names_in(word)))


def numbers_in(text: str, language: str = "English") -> set[str]:
    """The figures in `text`, normalised: "245,000" → "245000"; "1,35" → "1.35" (a decimal
    comma, as French or German write it); "2.45" stays."""
    found = set()
    for raw in NUMBER.findall(DIMENSION.sub(" ", text)):
        number = raw.rstrip(".,")
        if "," in number:
            thousands = THOUSANDS.match(number) and language == "English"
            number = number.replace(",", "" if thousands else ".")
        found.add(number)
    return found


# A figure joined to a word it qualifies ("1-bit Adam", "a 3-layer network") is part of a name
# or a setting, never an amount that rises or falls ("10-fold" is one).
COMPOUND = re.compile(r"^\d+(?:[.,]\d+)?-(?!fold$)[^\W\d_]+$")


def direction_of(text: str, figure: str, language: str = "English") -> tuple[str, int] | None:
    """The axis and sign `figure` is stated with in `text`: the direction word nearest to it in
    its clause ("a 3x-14x reduction" → amount, -1), if one is within reach."""
    for clause in CLAUSE_BREAK.split(text):
        words = [token.casefold() for token in TOKEN.findall(clause)]
        at = [
            i
            for i, word in enumerate(words)
            if figure in numbers_in(word, language) and not COMPOUND.match(word)
        ]
        near = sorted(
            (abs(i - j), DIRECTION_WORDS[word])
            for i in at
            for j, word in enumerate(words)
            if word in DIRECTION_WORDS and abs(i - j) <= DIRECTION_REACH
        )
        if near:
            return near[0][1]
    return None


def names_in(text: str) -> list[str]:
    """Name-like terms: acronyms, CamelCase, and names with digits (MT-Bench, Mamba-2, 2080Ti);
    capitalised words in a row ("SYSTEM OVERRIDE") are shouting, not names."""
    tokens = [match.group() for match in TOKEN.finditer(text)]
    names = []
    for index, token in enumerate(tokens):
        token = MODIFIER.sub("", token)  # "BERT-style" names BERT
        uppers = sum(char.isupper() for char in token)
        digits = any(char.isdigit() for char in token)
        name_like = any(c.isalpha() for c in token) and (uppers >= 2 or (uppers and digits))
        if name_like and not _shouted(tokens, index) and not NOT_A_NAME.match(token):
            names.append(token)
    return names


# How a paper introduces the name of what it proposes: "we propose X", "a method called X",
# "our new method Explained Variance Adaptation (EVA)".
COINED = r"[A-Za-z0-9]*[A-Z][A-Za-z0-9]*[A-Z0-9][A-Za-z0-9]*(?:[-+][A-Za-z0-9+]+)*\+*"
INTRODUCES = re.compile(
    r"\b(?:propose|proposes|introduce|introduces|introducing|present|presents|develop|develops"
    r"|call|our\s+(?:new\s+|novel\s+)?(?:method|approach|framework|model|algorithm|technique))\b"
    r"|\b(?P<naming>called|named|dubbed|termed)\b",
    re.IGNORECASE,
)
# What follows the verb that introduces it: "we propose [a|the|our] X".
INTRODUCED = r"[\s,]*(?:(?:a|an|the|our)\s+)?"
NAMED_NEXT = re.compile(rf"^{INTRODUCED}({COINED})\b")
# "Accelerated Preference Optimization (APO)": a Title-Case phrase defines the acronym.
DEFINED = re.compile(rf"\b[A-Z][\w-]*\s*\(({COINED})\)")
# "…, Transformers as Treatment Effect Estimators (TransTEE) is proposed.": the passive voice.
PROPOSED = re.compile(r"\b(?:is|are)\s+(?:proposed|introduced|presented|developed)\b")
# "the MhERGAN algorithm developed in this research", "the proposed LinguGKD": its own method.
OWN = re.compile(
    rf"\b(?:the|our)\s+(?:proposed\s+({COINED})\b|({COINED})\s+(?:method|approach|framework"
    r"|model|algorithm|technique|system|architecture)\s+(?:(?:that|which)\s+)?(?:we\s+)?"
    r"(?:(?:is|was|are|were)\s+)?(?:developed|proposed|introduced|presented)\b)"
)
# "Can LLMs also learn by teaching (LbT)?": a short form the abstract gives a phrase.
ABBREVIATED = re.compile(rf"((?:[^\W\d_][\w'-]*\s+){{1,8}})\(({COINED})\)")
ACRONYM = re.compile(r"[A-Z]{2,6}")
PLURAL_ACRONYM = re.compile(r"^[A-Z]{2,}s$")  # "LLMs" names a kind of thing, not a method
SETTING_WORDS = frozenset({"in", "for", "on", "to", "within", "across", "under", "towards"})
MAX_TITLE_NAME_WORDS = 3  # "ProDiff: …", "1-bit Adam: …"; a longer head is a phrase


@lru_cache(maxsize=4096)  # asked for each compared paper several times per question
def paper_name(title: str, abstract: str) -> str | None:
    """The name a paper gives what it proposes (APO, TIES-Merging, DFedSAM), which users and
    other papers call it by: a coined head of the title ("ProDiff: …"), else the name the
    abstract introduces, else a plain head of the title ("Error Feedback Reloaded: …")."""
    head, colon, _ = title.partition(":")
    head = head.strip()
    titled = bool(colon) and len(head.split()) <= MAX_TITLE_NAME_WORDS
    if titled and names_in(head):
        return head
    for sentence in split_sentences(abstract):
        for verb in INTRODUCES.finditer(sentence):
            after = sentence[verb.end() :]
            found = NAMED_NEXT.match(after) or (None if verb["naming"] else DEFINED.search(after))
            if found and not PLURAL_ACRONYM.match(found.group(1)):
                return found.group(1)
        passive = PROPOSED.search(sentence)
        found = DEFINED.search(sentence[: passive.start()]) if passive else None
        if found and not PLURAL_ACRONYM.match(found.group(1)):
            return found.group(1)
        own = OWN.search(sentence)
        if own:
            return own.group(1) or own.group(2)
    return head if titled else title_short_form(title, abstract)


def introduces(text: str, phrase: str) -> bool:
    """`text` proposes what `phrase` says ("we propose task narrowing", "a method called …"),
    not merely uses it ("what we call the objective mismatch issue" names a problem)."""
    follows = _introduced(phrase)
    return any(
        follows.match(text, verb.end())
        for verb in INTRODUCES.finditer(text)
        if verb.group(0).casefold() != "call"
    )


@lru_cache(maxsize=1024)  # asked of every sentence of every compared paper
def _introduced(phrase: str) -> re.Pattern[str]:
    return re.compile(rf"{INTRODUCED}{re.escape(phrase)}(?!\w)", re.IGNORECASE)


@lru_cache(maxsize=1024)
def whole_phrase(phrase: str) -> re.Pattern[str]:
    """`phrase` as whole words, in any case ("APO" not in "APOLLO")."""
    return re.compile(rf"(?<!\w){re.escape(phrase)}(?!\w)", re.IGNORECASE)


def title_short_form(title: str, abstract: str) -> str | None:
    """The short form the abstract gives a phrase of the title ("Generative Pre-trained
    Diffusion (GPD)" in "Generative Pre-Trained Diffusion Paradigm for …"): what readers call a
    paper whose abstract never says "we propose"; the first such phrase in the title wins. What
    the title says after "in", "for", … is the setting, not the paper ("Objective Mismatch in
    Model-based Reinforcement Learning" is not "MBRL")."""
    title_words = [word.casefold() for word in re.findall(r"[\w'-]+", title)]
    found = []
    for match in ABBREVIATED.finditer(abstract):
        short = match.group(2)
        phrase = [word.casefold() for word in _abbreviated_phrase(match.group(1).split(), short)]
        at = _position(phrase, title_words)
        if (
            at is not None
            and not PLURAL_ACRONYM.match(short)
            and short.casefold() not in title_words
            and not SETTING_WORDS & set(title_words[:at])
        ):
            found.append((at, short))
    return min(found)[1] if found else None


def _position(phrase: list[str], words: list[str]) -> int | None:
    """Where `phrase` starts in `words`, if it does (None for an empty phrase)."""
    size = len(phrase)
    starts = (i for i in range(len(words) - size + 1) if size and words[i : i + size] == phrase)
    return next(starts, None)


def _abbreviated_phrase(words: list[str], short: str) -> list[str]:
    """The last words before "(short)" that `short` abbreviates: each letter of it in order,
    its first at the start of the first word, and each word starting one of its letters (the
    Schwartz–Hearst rule, by words); at least two words ([] if none)."""
    letters = [char.casefold() for char in short if char.isalpha()]
    for count in range(2, min(len(words), len(letters)) + 1):
        phrase = words[-count:]
        if _spells(letters, phrase):
            return phrase
    return []


def _spells(letters: list[str], words: list[str]) -> bool:
    """`letters` read, in order, from `words`: each word gives its first letter, then any more."""
    remaining = letters
    for index, word in enumerate(words):
        lowered = word.casefold()
        if not remaining or lowered[0] != remaining[0]:
            return False
        remaining = remaining[1:]
        rest = lowered[1:]
        later_words = len(words) - index - 1
        while remaining and len(remaining) > later_words and remaining[0] in rest:
            rest = rest[rest.index(remaining[0]) + 1 :]
            remaining = remaining[1:]
    return not remaining


def mentions(text: str, name: str) -> bool:
    """`text` names `name`: as written, with or without hyphens ("3-D", "3D"), spelt out
    ("MRI": magnetic resonance imaging), or with a typo ("ProDif"); names that differ in a digit
    ("ResNet-56", "ResNet-50") are different names. A size ("64x64") in any of its forms."""
    if RESOLUTION.fullmatch(name):
        return bool(sizes_in([name]) & sizes_in([text]))
    if " " in name.strip():  # a name in words ("Neural Tangent Kernel"), in any case
        return _phrase(name) in _phrase(text)
    key = _name_key(name)
    vocabulary = {_name_key(token) for token in TOKEN.findall(text)}
    vocabulary |= {word.replace("-", "") for word in vocabulary}
    if key in vocabulary or key.replace("-", "") in vocabulary:
        return True
    if "-" in key and key.replace("-", " ") in text.casefold().replace("-", " "):
        return True  # "Multi-Level-Framework" (German) in "a multi-level framework"
    if name.isupper() and name.isalpha() and name.casefold() in _initials(text):
        return True
    digits = re.sub(r"\D", "", key)
    close = process.extract(key, vocabulary, scorer=fuzz.ratio, score_cutoff=NAME_MATCH_SCORE)
    return any(re.sub(r"\D", "", word) == digits for word, _, _ in close)


def called_by_name(text: str, papers: Iterable[tuple[str | None, str]]) -> list[str]:
    """Of papers' (name, title and abstract), the names `text` calls its paper by in words: the
    name itself ("Model Breadcrumbs"), or the words the paper spells it out with ("explained
    variance adaptation" for EVA; never other words with those initials)."""
    said = _phrase(text)
    return [
        name
        for name, own in papers
        if name and any(phrase in said for phrase in _spelt_out(name, own))
    ]


def _spelt_out(name: str, text: str) -> set[str]:
    """The name in words, and the runs of words of `text` whose initials spell an acronym."""
    phrases = {_phrase(name)}
    letters = "".join(_words(name))
    if sum(char.isupper() for char in name) >= 2 and len(letters) >= MIN_NAME_CHARS:
        words, size = _words(text), len(letters)
        phrases |= {
            _phrase(" ".join(words[start : start + size]))
            for start in range(len(words) - size + 1)
            if "".join(word[0] for word in words[start : start + size]) == letters
        }
    return phrases


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]+", text.casefold())


def _phrase(text: str) -> str:
    """`text`'s words, casefolded, spaced to be found whole in another's: " neural tangent "."""
    return f" {' '.join(_words(text))} "


def sizes_in(texts: Iterable[str]) -> set[str]:
    """The sizes ("256x256") that `texts` state, in one form."""
    return {f"{w}x{h}" for text in texts for w, h in SIZE.findall(text)}


@lru_cache(maxsize=1024)
def _initials(text: str) -> frozenset[str]:
    """The initials of every run of 2 to 5 words ("magnetic resonance imaging" → "mri")."""
    words = _words(text)
    return frozenset(
        {
            "".join(word[0] for word in words[start : start + size])
            for size in range(2, 6)
            for start in range(len(words) - size + 1)
        }
    )


def _name_key(token: str) -> str:
    return token.casefold().rstrip("s")


def without_names(text: str) -> str:
    """`text` with its names blanked: "ResNet-50", "Llama 2-7B" and "Llama 2" hold no
    figures."""
    for name in sorted(set(names_in(text)), key=len, reverse=True):
        text = text.replace(name, " ")
    return VERSIONED.sub(" ", text)


# A model's version after its name ("Llama 2", "Gemini 1.5"); after an acronym a number is a
# figure ("FID 1.35").
VERSIONED = re.compile(r"\b[A-Z][a-z]+\s\d{1,2}(?:\.\d)?\b(?![.,]?\d|\s*(?:%|x\b|times\b))")


def _shouted(tokens: list[str], index: int) -> bool:
    def capitals(i: int) -> bool:
        return (
            0 <= i < len(tokens)
            and len(tokens[i]) >= 4
            and tokens[i].isalpha()
            and (tokens[i].isupper())
        )

    return capitals(index) and (capitals(index - 1) or capitals(index + 1))


def stems(words: set[str]) -> set[str]:
    """English stems ("sampling", "samples" → "sampl")."""
    return set(_stemmer().stemWords(sorted(words)))


def word_stems(text: str) -> set[str]:
    """The stems of a text's words, case folded."""
    return stems({word.casefold() for word in TOKEN.findall(text)})


@cache
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


# The languages told apart; names are left out first (they read as any language).
LANGUAGES = [
    "ENGLISH",
    "FRENCH",
    "GERMAN",
    "SPANISH",
    "ITALIAN",
    "PORTUGUESE",
    "DUTCH",
    "CHINESE",
    "JAPANESE",
    "KOREAN",
    "RUSSIAN",
]
MIN_LANGUAGE_CONFIDENCE = 0.4
MIN_LANGUAGE_WORDS = 3
NON_LATIN = re.compile(r"[\u0400-\u04ff\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]")


def language_of(text: str) -> str:
    """The language `text` is written in ("English" when the detector is unsure)."""
    words = " ".join(token for token in text.split() if not names_in(token))
    if len(words.split()) < MIN_LANGUAGE_WORDS and not NON_LATIN.search(words):
        return "English"  # a word or two ("grokking") reads as any language
    ranked = _detector().compute_language_confidence_values(words)
    best = ranked[0] if ranked else None
    if best is None or best.value < MIN_LANGUAGE_CONFIDENCE:
        return "English"
    return str(best.language.name).title()


@cache
def _detector() -> Any:
    from lingua import Language, LanguageDetectorBuilder

    return LanguageDetectorBuilder.from_languages(
        *(getattr(Language, name) for name in LANGUAGES)
    ).build()
