"""The verifier against bad drafts as well as good ones: garbled figures, the question echoed,
wrong citations, another paper's figure or name, a refusal when the evidence answers."""

import pytest

from assistant.analyse import analyse
from assistant.pack import PackedSource, pack
from assistant.retrieve import RetrievedPaper
from assistant.settings import AnswerSettings
from assistant.verify import Claim, Draft, Verifier
from ingest.embed import Embedder

PRODIFF = (
    "Denoising diffusion models need hundreds of iterations for speech synthesis.",
    "Our evaluation demonstrates that ProDiff needs only 2 iterations to synthesize "
    "high-fidelity mel-spectrograms.",
    "ProDiff enables a sampling speed of 24x faster than real-time on a single NVIDIA 2080Ti GPU.",
)
GNNPIPE = (
    "GNNPipe partitions GNN layers among GPUs.",
    "GNNPipe reduces the per-epoch training time by up to 2.45x compared to graph parallelism.",
)
SPEED = "How many times faster than real time does ProDiff synthesise speech on one GPU?"


PAPERS = [
    RetrievedPaper(
        "prodiff", "ProDiff: Progressive Fast Diffusion Model for TTS", " ".join(PRODIFF), 0.9
    ),
    RetrievedPaper("gnnpipe", "GNNPipe: Scaling Deep GNN Training", " ".join(GNNPIPE), 0.5),
]


@pytest.fixture
def verifier(embedder: Embedder) -> Verifier:
    return Verifier(embedder, AnswerSettings())


@pytest.fixture
def sources(verifier: Verifier) -> list[PackedSource]:
    """Both papers whole, as packing numbers and ranks their sentences for the question."""
    return pack(PAPERS, 10_000, analyse("Compare the speed of both"), verifier.similarities)


def draft(*claims: tuple[str, tuple[str, ...]]) -> Draft:
    return Draft(tuple(Claim(text, keys) for text, keys in claims), declined=not claims)


def test_a_supported_claim_keeps_its_evidence(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    verdict = verifier.verify(
        draft(
            ("ProDiff synthesises speech 24x faster than real-time on one 2080Ti GPU.", ("1.3",))
        ),
        analyse(SPEED),
        sources,
    )
    assert not verdict.declined
    assert verdict.citations == [1] and verdict.evidence == ["1.3"]
    assert "24x" in verdict.answer and verdict.answer.endswith("[1]")


def test_a_garbled_figure_is_replaced_by_the_evidence(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    verdict = verifier.verify(
        draft(("ProDiff is 42x faster than real-time on one GPU.", ("1.3",))),
        analyse(SPEED),
        sources,
    )
    assert verdict.unsupported == [0]
    assert "42" not in verdict.answer
    assert PRODIFF[2] in verdict.answer  # the cited evidence answers: quoted as it is


def test_a_wrong_citation_within_the_paper_is_repointed(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    verdict = verifier.verify(
        draft(("ProDiff runs 24x faster than real-time on a single GPU.", ("1.1",))),
        analyse(SPEED),
        sources,
    )
    assert not verdict.declined and "1.3" in verdict.evidence and "24x" in verdict.answer


def test_another_papers_figure_is_not_credited(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    question = "By how much does ProDiff reduce the per-epoch training time?"
    verdict = verifier.verify(
        draft(("ProDiff reduces the per-epoch training time by up to 2.45x.", ("1.2",))),
        analyse(question),
        sources,
    )
    assert "2.45" not in verdict.answer


def test_the_question_said_back_answers_nothing(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    verdict = verifier.verify(draft((SPEED, ("1.3",))), analyse(SPEED), sources)
    assert verdict.unsupported == [0]


def test_a_figure_question_answered_without_the_figure_is_declined(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    question = "How many GPUs does GNNPipe partition its layers among?"
    verdict = verifier.verify(
        draft(("GNNPipe partitions GNN layers among GPUs.", ("2.1",))), analyse(question), sources
    )
    assert verdict.declined


def test_a_refusal_is_overruled_when_the_best_source_answers(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    verdict = verifier.verify(draft(), analyse(SPEED), sources)
    assert not verdict.declined and "24x" in verdict.answer and verdict.citations == [1]


def test_a_refusal_stands_when_nothing_answers(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    question = "How much memory does ProDiff use on a TPU?"
    assert verifier.verify(draft(), analyse(question), sources).declined


def test_a_comparison_covers_each_paper(verifier: Verifier, sources: list[PackedSource]) -> None:
    question = "Compare how ProDiff and GNNPipe speed things up."
    verdict = verifier.verify(
        draft(("ProDiff is 24x faster than real-time on one GPU.", ("1.3",))),
        analyse(question),
        sources,
    )
    assert verdict.citations == [1, 2]
    assert "GNNPipe: Scaling Deep GNN Training [2]" in verdict.answer


def test_a_false_premise_is_corrected(verifier: Verifier, sources: list[PackedSource]) -> None:
    question = "Why is ProDiff only 5x faster than real time on one GPU?"
    verdict = verifier.verify(draft(), analyse(question), sources)
    assert not verdict.declined
    assert "do not report 5" in verdict.answer and "24x" in verdict.answer, verdict.answer


def test_a_which_paper_answer_names_the_paper(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    question = "Which paper makes diffusion-based speech synthesis need only two iterations?"
    verdict = verifier.verify(
        draft(
            ("It needs only 2 iterations to synthesize high-fidelity mel-spectrograms.", ("1.2",))
        ),
        analyse(question),
        sources,
    )
    assert verdict.answer.startswith("ProDiff: Progressive Fast Diffusion Model for TTS [1]")


def test_ids_the_prompt_never_gave_are_ignored(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    verdict = verifier.verify(
        draft(("ProDiff is 24x faster than real-time on one 2080Ti GPU.", ("7.9",))),
        analyse(SPEED),
        sources,
    )
    assert verdict.evidence and all(key in {"1.1", "1.2", "1.3"} for key in verdict.evidence)


def test_the_most_relevant_sentence_joins_a_claim_about_a_neighbouring_one(
    verifier: Verifier,
) -> None:
    question = analyse(SPEED)
    sources = pack(PAPERS[:1], 10_000, question, verifier.similarities)
    assert sources[0].by_relevance[0] == "1.3"  # packing ranks the speed sentence first
    verdict = verifier.verify(
        draft(("ProDiff needs only 2 iterations to synthesize mel-spectrograms.", ("1.2",))),
        question,
        sources,
    )
    assert verdict.evidence == ["1.2", "1.3"]
    assert "2 iterations" in verdict.answer and "24x faster" in verdict.answer
