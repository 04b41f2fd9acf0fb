from __future__ import annotations

from itertools import pairwise

import pytest

from assistant.pack import (
    ELLIPSIS,
    MAX_SENTENCES_BELOW_TOP,
    OMISSION,
    count_tokens,
    pack,
    render_sources,
)
from assistant.retrieve import RetrievedPaper
from ingest.chunk import split_sentences

TEXT = " ".join(f"Sentence {i} describes a result about transformers." for i in range(40))
ABSTRACT = (
    "Diffusion models generate speech of high quality. "
    "They need hundreds of denoising steps, which makes them slow. "
    "We propose QuickVoice, a distilled sampler for speech synthesis. "
    "QuickVoice trains a student that needs only two denoising iterations. "
    "It runs 24 times faster than real time on a single 2080Ti GPU. "
    "Listening tests show quality close to the teacher model. "
    "Code and samples are available online."
)
OTHER = (
    "Graph neural networks are hard to scale. "
    "We partition layers among GPUs as pipeline stages. "
    "Training time per epoch drops by up to 2.45x. "
    "Communication volume drops as well."
)


def papers(n: int, text: str = TEXT) -> list[RetrievedPaper]:
    return [RetrievedPaper(f"p{i}", f"Title {i}", text, 1.0 / (i + 1)) for i in range(n)]


def paper(paper_id: str, title: str, text: str) -> RetrievedPaper:
    return RetrievedPaper(paper_id, title, text, 1.0)


def test_everything_fits_in_a_large_window() -> None:
    packed = pack(papers(3), budget_tokens=10_000)
    assert [p.rank for p in packed] == [1, 2, 3]
    assert all(p.text == TEXT and p.render().count("…") == 0 for p in packed)


def test_the_budget_is_never_exceeded() -> None:
    question = "What result about transformers does sentence 17 describe?"
    for budget in (40, 120, 300, 700, 1500):
        packed = pack(papers(5), budget, question)
        assert packed
        assert count_tokens(render_sources(packed)) <= budget


def test_nothing_fits_gives_nothing() -> None:
    assert pack(papers(2), budget_tokens=5) == []


def test_keeps_the_sentence_that_answers_and_says_where_others_were_left_out() -> None:
    sources = [paper("a", "QuickVoice: Fast Speech Synthesis", ABSTRACT)]
    packed = pack(sources, 60, "How many times faster than real time does QuickVoice run?")
    assert len(packed) == 1
    kept = split_sentences(packed[0].text)
    assert "It runs 24 times faster than real time on a single 2080Ti GPU." in kept
    assert len(kept) < len(split_sentences(ABSTRACT))
    assert count_tokens(render_sources(packed)) <= 60


def test_kept_sentences_keep_the_abstract_order_and_are_whole() -> None:
    sources = [paper("a", "QuickVoice: Fast Speech Synthesis", ABSTRACT)]
    question = "How many denoising iterations does QuickVoice need, and how fast is it on a GPU?"
    packed = pack(sources, 90, question)[0]
    sentences = split_sentences(ABSTRACT)
    kept = split_sentences(packed.text)  # what the verifier reads: whole sentences only
    assert set(kept) <= set(sentences)
    positions = [sentences.index(sentence) for sentence in kept]
    assert positions == sorted(positions)
    # The model sees " … " exactly where sentences were skipped.
    gaps = sum(1 for a, b in pairwise(positions) if b != a + 1)
    shown = packed.shown or packed.text
    assert shown.count(OMISSION) == gaps
    assert shown.replace(OMISSION, " ") == packed.text
    # The model sees each kept sentence as numbered evidence, under the title.
    lines = [f"[1.{index}] {sentence}" for index, sentence in enumerate(kept, start=1)]
    assert packed.render().strip().splitlines() == [f"[1] {packed.paper.title}", *lines]


def test_the_top_paper_gets_the_room_and_the_others_their_best_sentences() -> None:
    question = "What does sentence 3 describe about transformers?"
    packed = pack(papers(4), 400, question)
    assert [p.rank for p in packed] == [1, 2, 3, 4]
    counts = [len(split_sentences(p.text)) for p in packed]
    assert counts[0] > max(counts[1:])
    assert all(1 <= count <= MAX_SENTENCES_BELOW_TOP for count in counts[1:])
    # Each paper's best sentence (sentence 3: most shared words with the question) is kept.
    assert all("Sentence 3 describes" in p.text for p in packed)


def test_a_paper_of_one_long_sentence() -> None:
    long = "This abstract is a single sentence that goes on " + "and on " * 200 + "forever."
    question = "What does the single sentence say?"
    # It fits: kept whole.
    packed = pack([paper("a", "Long", long)], 10_000, question)
    assert packed[0].text == long
    # It does not fit even alone: as the top paper it is cut between words, under the budget.
    packed = pack([paper("a", "Long", long)], 100, question)
    assert len(packed) == 1 and packed[0].text.endswith(ELLIPSIS)
    assert long.startswith(packed[0].text.removesuffix(ELLIPSIS))
    assert count_tokens(render_sources(packed)) <= 100
    # Below a paper that fits, it is left out rather than cut.
    sources = [paper("a", "QuickVoice", ABSTRACT), paper("b", "Long", long)]
    packed = pack(sources, 150, "How fast does QuickVoice run?")
    assert [p.paper.id for p in packed] == ["a"]


def test_similarity_ranks_sentences_in_one_batch() -> None:
    calls: list[list[str]] = []
    favourite = "Listening tests show quality close to the teacher model."

    def similarity(text: str, sentences: list[str]) -> list[float]:
        calls.append(sentences)
        return [0.9 if sentence == favourite else 0.1 for sentence in sentences]

    sources = [paper("a", "QuickVoice", ABSTRACT), paper("b", "GNN pipelines", OTHER)]
    packed = pack(sources, 45, "Is the audio any good?", similarity)
    assert len(calls) == 1 and len(calls[0]) == len(split_sentences(ABSTRACT + " " + OTHER))
    assert favourite in split_sentences(packed[0].text)


def test_a_far_less_relevant_paper_is_left_out_unless_several_are_asked_about() -> None:
    def similarity(text: str, sentences: list[str]) -> list[float]:
        return [0.8 if sentence in ABSTRACT else 0.1 for sentence in sentences]

    sources = [paper("a", "QuickVoice", ABSTRACT), paper("b", "GNN pipelines", OTHER)]
    single = pack(sources, 2_000, "How fast is the distilled speech sampler?", similarity)
    assert [p.paper.id for p in single] == ["a"]
    assert single[0].text == ABSTRACT  # the room goes to the top paper
    several = pack(sources, 2_000, "Compare the speech sampler and the GNN pipeline.", similarity)
    assert [p.paper.id for p in several] == ["a", "b"]


def test_a_quantity_question_prefers_the_sentence_with_the_figure() -> None:
    def similarity(text: str, sentences: list[str]) -> list[float]:
        # MiniLM likes the topic sentence better than the one with the answer.
        return [0.7 if "pipeline stages" in sentence else 0.4 for sentence in sentences]

    packed = pack([paper("b", "GNN pipelines", OTHER)], 40, "By what factor is training faster?")
    assert "2.45x" in packed[0].text
    packed = pack(
        [paper("b", "GNN pipelines", OTHER)], 40, "By what factor is training faster?", similarity
    )
    assert "2.45x" in packed[0].text


def test_packing_is_deterministic() -> None:
    sources = [paper("a", "QuickVoice", ABSTRACT), paper("b", "GNN pipelines", OTHER), *papers(3)]
    question = "How many denoising iterations does QuickVoice need?"
    assert pack(sources, 250, question) == pack(sources, 250, question)


def only_quickvoice_is_close(text: str, sentences: list[str]) -> list[float]:
    return [0.9 if sentence in ABSTRACT else 0.1 for sentence in sentences]


@pytest.mark.parametrize(
    ("other", "question", "kept"),
    [
        (  # the only paper that mentions a name the question asks about: LibriTTS
            "Speech corpora differ in size. We evaluate vocoders on LibriTTS with many speakers.",
            "How fast is QuickVoice on LibriTTS?",
            "LibriTTS",
        ),
        (  # the paper the question calls by its name in words: SGP
            "Deep graph networks are slow to train. We propose Sparse Graph Pipelines (SGP), "
            "which partition layers among GPUs. SGP balances the pipeline stages.",
            "How many times faster than real time do sparse graph pipelines train?",
            "SGP",
        ),
    ],
)
def test_a_paper_the_question_names_stays_in_the_prompt(
    other: str, question: str, kept: str
) -> None:
    sources = [paper("a", "QuickVoice", ABSTRACT), paper("b", "Second paper", other)]
    packed = pack(sources, 120, question, only_quickvoice_is_close)
    # Far less relevant than QuickVoice's figure, but named by the question: kept, with a
    # sentence that names it.
    assert [p.paper.id for p in packed] == ["a", "b"]
    assert kept in packed[1].text
    assert count_tokens(render_sources(packed)) <= 120


def test_a_question_that_describes_its_paper_first_ranks_sentences_by_what_it_asks() -> None:
    description = "In the study of a fast speech synthesis sampler with a distilled student, "
    asked = "what do listening tests show?"
    answer = "Listening tests show quality close to the teacher model."

    def similarity(text: str, sentences: list[str]) -> list[float]:
        # MiniLM: the whole question is closest to the sentences its description echoes.
        if text == asked:
            return [0.6 if sentence == answer else 0.2 for sentence in sentences]
        return [
            0.6 if "distilled" in sentence or "student" in sentence else 0.2
            for sentence in sentences
        ]

    source = [paper("a", "QuickVoice", ABSTRACT)]
    packed = pack(source, 2_000, description + asked, similarity)
    assert packed[0].evidence[packed[0].by_relevance[0]] == answer
    whole = pack(
        source, 2_000, "What do listening tests of the distilled student show?", similarity
    )
    assert whole[0].evidence[whole[0].by_relevance[0]] != answer  # the control: no description
