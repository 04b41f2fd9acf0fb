import pytest

from assistant.extract import is_topic, method_name, name_cited_methods, quote_best_sentence
from assistant.pack import PackedSource
from assistant.retrieve import RetrievedPaper
from assistant.verify import Verdict, Verifier
from ingest.embed import Embedder

LINGUGKD = (
    "Knowledge distillation transfers knowledge from large language models (LLMs) to graph "
    "neural networks. We propose a graph knowledge distillation framework, termed Linguistic "
    "Graph Knowledge Distillation (LinguGKD), using LLMs as teacher models."
)
ABILITY_LENS = (
    "Benchmarks rarely agree. To address this, we introduce AbilityLens, a unified benchmark "
    "designed to evaluate six perception abilities of MLLMs."
)


@pytest.mark.parametrize(
    ("title", "abstract", "expected"),
    [
        ("FedCompass: Efficient Cross-Silo Federated Learning", "We propose it.", "FedCompass"),
        ("PLeaS -- Merging Models with Permutations", "We merge models.", "PLeaS"),
        (
            "Large Language Model Meets Graph Neural Network in Knowledge Distillation",
            LINGUGKD,
            "Linguistic Graph Knowledge Distillation (LinguGKD)",
        ),
        (
            "Evaluating Multimodal Large Language Models in Ability Lens",
            ABILITY_LENS,
            "AbilityLens",
        ),
        (
            "Efficient Personalized Federated Learning via Sparse Model-Adaptation",
            "To overcome these challenges, we propose a novel approach named pFedGate for FL.",
            "pFedGate",
        ),
        # A question title is not a name, and terms defined in passing are not the method.
        (
            "Is Model Collapse Inevitable? Breaking the Curse of Recursion",
            "We study large language models (LLMs) trained on their own outputs.",
            None,
        ),
        ("An Overview of Diffusion Models: Applications", "We review diffusion models.", None),
    ],
)
def test_method_name(title: str, abstract: str, expected: str | None) -> None:
    assert method_name(title, abstract) == expected


def _sources(*papers: tuple[str, str]) -> list[PackedSource]:
    return [
        PackedSource(rank, RetrievedPaper(f"p{rank}", title, text, 0.5), text)
        for rank, (title, text) in enumerate(papers, start=1)
    ]


def test_which_paper_answer_gains_the_method_name() -> None:
    title = "Large Language Model Meets Graph Neural Network in Knowledge Distillation"
    sources = _sources((title, LINGUGKD))
    verdict = Verdict(f"{title} [1].", [1], [], False)
    named = name_cited_methods(
        verdict, sources, "Which paper distills an LLM teacher into a GNN student?"
    )
    assert named.answer == f"{title} [1]. {title} [1] introduces {method_name(title, LINGUGKD)}."
    assert named.citations == [1]


def test_names_already_given_or_not_asked_for_are_left_alone() -> None:
    sources = _sources(("AbilityLens Paper", ABILITY_LENS))
    given = Verdict("AbilityLens measures six perception abilities [1].", [1], [], False)
    assert name_cited_methods(given, sources, "Which paper measures perception?") == given
    fact = Verdict("It measures six perception abilities [1].", [1], [], False)
    assert name_cited_methods(fact, sources, "How many abilities does it measure?") == fact
    declined = Verdict("The collection does not say.", [], [], True)
    assert name_cited_methods(declined, sources, "Which paper measures perception?") == declined


PRODIFF_TITLE = "ProDiff: Progressive Fast Diffusion Model For High-Quality Text-to-Speech"
PRODIFF = (
    "Denoising diffusion probabilistic models have shown outstanding performance in speech "
    "synthesis, but they require hundreds of iterations. Our evaluation demonstrates that "
    "ProDiff needs only 2 iterations to synthesize high-fidelity mel-spectrograms. ProDiff "
    "enables a sampling speed of 24x faster than real-time on a single NVIDIA 2080Ti GPU."
)


@pytest.fixture
def verifier(embedder: Embedder) -> Verifier:
    return Verifier(embedder, semantic_threshold=0.6, lexical_threshold=0.7)


def test_a_failed_draft_is_replaced_by_the_closest_sentence(verifier: Verifier) -> None:
    sources = _sources((PRODIFF_TITLE, PRODIFF))
    quoted = quote_best_sentence(
        "How many denoising iterations does ProDiff need to synthesize mel-spectrograms?",
        "ProDiff needs 7 iterations.",  # the kind of figure the verifier drops
        sources,
        verifier,
        min_similarity=0.45,
    )
    assert quoted is not None and not quoted.declined
    assert quoted.answer.startswith("Our evaluation demonstrates that ProDiff needs only 2")
    assert quoted.answer.endswith("[1]") and quoted.citations == [1]


def test_no_quote_when_the_sentence_is_only_about_the_same_paper(verifier: Verifier) -> None:
    sources = _sources((PRODIFF_TITLE, PRODIFF))
    # Sentences about ProDiff exist, none about its parameter count: decline, do not quote.
    asked = "How many parameters does the ProDiff acoustic model have?"
    assert quote_best_sentence(asked, "It has 24 parameters.", sources, verifier, 0.3) is None


def test_a_declining_draft_is_taken_at_its_word(verifier: Verifier) -> None:
    sources = _sources((PRODIFF_TITLE, PRODIFF))
    question = "How many denoising iterations does ProDiff need to synthesize mel-spectrograms?"
    declined = "The collection does not say."
    assert quote_best_sentence(question, declined, sources, verifier, 0.45) is None


def test_a_topic_gets_the_closest_sentence_under_its_title(verifier: Verifier) -> None:
    sources = _sources((PRODIFF_TITLE, PRODIFF))
    quoted = quote_best_sentence(
        "fast speech synthesis", "The collection does not say.", sources, verifier, 0.3
    )
    assert quoted is not None
    assert quoted.answer.startswith(f"{PRODIFF_TITLE} [1]: ")
    assert is_topic("gossip learning") and not is_topic("What is gossip learning?")
