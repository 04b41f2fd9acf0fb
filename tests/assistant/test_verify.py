import pytest

from assistant.pack import PackedSource
from assistant.retrieve import RetrievedPaper
from assistant.verify import SourceFacts, Verifier, asks_for_figure, without_markup
from ingest.embed import Embedder

PRODIFF = (
    "Our evaluation demonstrates that ProDiff needs only 2 iterations to synthesize "
    "high-fidelity mel-spectrograms. ProDiff enables a sampling speed of 24x faster than "
    "real-time on a single NVIDIA 2080Ti GPU."
)
GNNPIPE = "GNNPipe reduces the per-epoch training time by up to 2.45x."


@pytest.fixture
def sources() -> list[PackedSource]:
    papers = [
        RetrievedPaper("prodiff", "ProDiff: Progressive Fast Diffusion", PRODIFF, 0.9),
        RetrievedPaper("gnnpipe", "GNNPipe: Scaling Deep GNN Training", GNNPIPE, 0.5),
    ]
    return [PackedSource(rank, paper, paper.text) for rank, paper in enumerate(papers, start=1)]


@pytest.fixture
def verifier(embedder: Embedder) -> Verifier:
    return Verifier(embedder, semantic_threshold=0.6, lexical_threshold=0.7)


def test_supported_sentence_keeps_its_citation(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    verdict = verifier.check(
        "ProDiff needs only 2 iterations to synthesize mel-spectrograms [1].", sources
    )
    assert not verdict.declined
    assert verdict.citations == [1]
    assert "2 iterations" in verdict.answer


def test_invented_number_is_removed_and_answer_declines(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    verdict = verifier.check(
        "ProDiff needs 50 iterations to synthesize mel-spectrograms [1].", sources
    )
    assert verdict.declined
    assert verdict.unsupported == [0]
    assert verdict.citations == []


def test_invalid_marker_is_dropped_and_citation_repaired(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    verdict = verifier.check("GNNPipe cuts per-epoch training time by up to 2.45x [7].", sources)
    assert verdict.citations == [2]
    assert "[7]" not in verdict.answer and verdict.answer.endswith("[2]")


def test_mixed_answer_keeps_only_supported_sentences(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    draft = (
        "ProDiff runs 24x faster than real-time on one 2080Ti GPU [1]. "
        "It was trained on 64 TPU pods for 3 weeks [1]."
    )
    verdict = verifier.check(draft, sources)
    assert not verdict.declined
    assert verdict.unsupported == [1]
    assert "TPU" not in verdict.answer


def test_decline_phrase_is_a_decline(verifier: Verifier, sources: list[PackedSource]) -> None:
    assert verifier.check("The collection does not say.", sources).declined


def test_bare_marker_names_the_paper_only_for_which_paper_questions(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    verdict = verifier.check("[2]", sources, "Which paper pipelines GNN layers across GPUs?")
    assert verdict.answer.startswith("GNNPipe: Scaling Deep GNN Training")
    assert verdict.citations == [2]
    assert verifier.check("[2]", sources, "What batch size did GNNPipe use?").declined


def test_bare_value_found_in_the_cited_source_is_kept(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    verdict = verifier.check("[1] 24x", sources, "How much faster than real time is ProDiff?")
    assert not verdict.declined and verdict.citations == [1]


def test_numbers_from_two_sources_in_one_sentence(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    draft = "ProDiff needs 2 iterations while GNNPipe cuts epoch time by up to 2.45x."
    verdict = verifier.check(draft, sources)
    assert not verdict.declined
    assert verdict.citations == [1, 2]


def test_a_figure_credited_to_the_wrong_paper_is_unsupported(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    # 24x is ProDiff's figure; the ProDiff source never mentions GNNPipe.
    verdict = verifier.check("GNNPipe runs 24x faster than real-time [1].", sources)
    assert verdict.declined and verdict.unsupported == [0]


def test_question_about_a_name_no_cited_source_mentions_is_declined(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    draft = "ProDiff needs only 2 iterations to synthesize mel-spectrograms [1]."
    verdict = verifier.check(draft, sources, "How many iterations does ProDiff need on MT-Bench?")
    assert verdict.declined
    typo = verifier.check(draft, sources, "How many iterations does ProDif need?")
    assert not typo.declined


def test_a_restated_title_answers_only_which_paper_questions(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    draft = "[2]. GNNPipe: Scaling Deep GNN Training [2]."
    which = verifier.check(draft, sources, "Which paper partitions GNN layers among GPUs?")
    assert which.answer == "GNNPipe: Scaling Deep GNN Training [2]."  # once, not twice
    assert verifier.check(draft, sources, "What speedup does GNNPipe report?").declined


def test_a_quantity_question_needs_a_number(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    draft = "GNNPipe reduces the per-epoch training time [2]."
    assert verifier.check(draft, sources, "By what factor does GNNPipe cut epoch time?").declined
    assert not verifier.check(draft, sources, "What does GNNPipe reduce?").declined


def test_a_sentence_naming_a_paper_its_source_does_not_name_is_unsupported(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    # True of ProDiff, credited to GNNPipe: the support is there, the attribution is not.
    verdict = verifier.check(
        "GNNPipe needs only 2 iterations to synthesize high-fidelity mel-spectrograms [1].",
        sources,
    )
    assert verdict.declined and verdict.unsupported == [0]


def test_the_question_said_back_answers_nothing(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    question = "In the ProDiff paper, how fast is sampling on a single NVIDIA 2080Ti GPU?"
    echo = "In the ProDiff paper, sampling on a single NVIDIA 2080Ti GPU is fast [1]."
    assert verifier.check(echo, sources, question).declined
    answer = "ProDiff samples 24x faster than real-time on a single NVIDIA 2080Ti GPU [1]."
    assert not verifier.check(answer, sources, question).declined


def test_a_bare_value_must_measure_what_is_asked(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    question = "How many iterations does ProDiff need?"
    assert verifier.check("5.7 days [1].", sources, question).declined
    assert not verifier.check("2 iterations [1].", sources, question).declined


@pytest.mark.parametrize(
    ("question", "needs_figure"),
    [
        ("In the ProDiff paper, how many iterations are needed?", True),
        ("What speedup does ProDiff reach?", True),
        ("Which paper assigns work to clients based on how much compute they have?", False),
        ("What does ProDiff distil?", False),
    ],
)
def test_questions_asking_for_a_figure(question: str, needs_figure: bool) -> None:
    assert asks_for_figure(question) is needs_figure


def test_a_comparison_may_cite_one_paper_per_name(
    verifier: Verifier, sources: list[PackedSource]
) -> None:
    # The ProDiff sentence alone does not mention GNNPipe; for a comparison that is expected.
    draft = "ProDiff needs only 2 iterations to synthesize mel-spectrograms [1]."
    assert verifier.check(draft, sources, "What does GNNPipe need, and ProDiff?").declined
    compared = verifier.check(draft, sources, "Compare ProDiff and GNNPipe.")
    assert not compared.declined and compared.citations == [1]


def test_markup_is_not_part_of_the_question() -> None:
    question = "<script>alert('xss')</script> What FID does <b>PFGM++</b> get?"
    assert without_markup(question) == "What FID does PFGM++ get?"
    assert without_markup("<b></b>") == "<b></b>"  # nothing else to go on: kept as it is


def test_a_hyphenated_name_may_be_written_with_a_space() -> None:
    paper = RetrievedPaper(
        "xva", "Multi-Layer Deep xVA", "We use an iterative deep BSDE approach.", 1
    )
    facts = SourceFacts(PackedSource(1, paper, paper.text))
    assert facts.mentions("deep-BSDE") and not facts.mentions("deep-Galerkin")
