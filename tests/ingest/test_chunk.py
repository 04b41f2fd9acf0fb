import itertools
from pathlib import Path

from ingest.chunk import SPECIAL_TOKENS, chunk_paper, split_sentences
from ingest.embed import Embedder
from ingest.parse import Paper, read_papers


def test_every_chunk_fits_the_embedder_and_starts_with_the_title(
    corpus_path: Path, embedder: Embedder
) -> None:
    papers = [p for p in read_papers(corpus_path) if isinstance(p, Paper)]
    for paper in papers:
        chunks = chunk_paper(paper, embedder.count_tokens, max_tokens=256, overlap_tokens=32)
        assert chunks
        for chunk in chunks:
            assert chunk.text.startswith(paper.title + "\n")
            real = embedder.count_tokens(chunk.text) + SPECIAL_TOKENS
            assert real <= 256, (paper.id, chunk.index, real)
        # every sentence of the abstract lands in some chunk
        covered = " ".join(chunk.passage for chunk in chunks)
        for sentence in split_sentences(paper.abstract):
            assert sentence in covered


def test_long_abstracts_split_with_sentence_overlap(embedder: Embedder) -> None:
    sentences = [f"Sentence number {i} talks about diffusion models and speed." for i in range(60)]
    paper = Paper("p", "A title", " ".join(sentences))
    chunks = chunk_paper(paper, embedder.count_tokens, max_tokens=128, overlap_tokens=32)
    assert len(chunks) > 3
    for previous, current in itertools.pairwise(chunks):
        previous_sentences = split_sentences(previous.passage)
        current_sentences = split_sentences(current.passage)
        # the next chunk repeats whole trailing sentences of the previous one
        assert previous_sentences[-1] in current_sentences
        overlap = current_sentences[: current_sentences.index(previous_sentences[-1]) + 1]
        assert previous_sentences[-len(overlap) :] == overlap


def test_a_sentence_longer_than_a_chunk_is_split_between_words(embedder: Embedder) -> None:
    paper = Paper("p", "T", " ".join(["word"] * 600) + ".")
    chunks = chunk_paper(paper, embedder.count_tokens, max_tokens=64, overlap_tokens=0)
    assert len(chunks) > 5
    assert all(embedder.count_tokens(c.text) + SPECIAL_TOKENS <= 64 for c in chunks)


def test_batched_counting_gives_the_exact_chunks(corpus_path: Path, embedder: Embedder) -> None:
    papers = [p for p in read_papers(corpus_path) if isinstance(p, Paper)]
    papers.append(Paper("long", "T", " ".join(["word"] * 600) + ". Then a short one."))
    calls: list[int] = []

    def count_many(texts: list[str]) -> list[int]:
        calls.append(len(texts))
        return embedder.count_tokens_many(texts)

    for max_tokens, overlap in ((256, 32), (128, 32), (96, 0)):
        for paper in papers:
            exact = chunk_paper(paper, embedder.count_tokens, max_tokens, overlap)
            fast = chunk_paper(paper, embedder.count_tokens, max_tokens, overlap, count_many)
            assert fast == exact, (paper.id, max_tokens)
    assert len(calls) <= 2 * 3 * len(papers)  # at most two tokenizer calls per paper


def test_a_tokenizer_whose_counts_do_not_add_up_falls_back_to_exact_packing() -> None:
    def count(text: str) -> int:  # one token per character: joins cost an extra token
        return len(text)

    def count_many(texts: list[str]) -> list[int]:
        return [max(len(text) - 10, 1) for text in texts]  # undercounts

    paper = Paper("p", "T", " ".join(f"Sentence {i} is here." for i in range(40)))
    chunks = chunk_paper(paper, count, 96, 16, count_many)
    assert chunks == chunk_paper(paper, count, 96, 16)
    assert all(len(chunk.text) + SPECIAL_TOKENS <= 96 for chunk in chunks)
