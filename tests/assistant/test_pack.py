from assistant.pack import ELLIPSIS, count_tokens, pack
from assistant.retrieve import RetrievedPaper

TEXT = " ".join(f"Sentence {i} describes a result about transformers." for i in range(40))


def papers(n: int) -> list[RetrievedPaper]:
    return [RetrievedPaper(f"p{i}", f"Title {i}", TEXT, 1.0 / (i + 1)) for i in range(n)]


def test_everything_fits_in_a_large_window() -> None:
    packed = pack(papers(3), budget_tokens=10_000)
    assert [p.rank for p in packed] == [1, 2, 3]
    assert all(p.text == TEXT for p in packed)


def test_never_overflows_and_cuts_only_between_sentences() -> None:
    budget = 700
    packed = pack(papers(5), budget_tokens=budget)
    assert sum(count_tokens(p.render()) for p in packed) <= budget
    assert packed[0].text == TEXT
    last = packed[-1]
    assert last.text.endswith("." + ELLIPSIS)
    assert TEXT.startswith(last.text.removesuffix(ELLIPSIS))


def test_nothing_fits_gives_nothing() -> None:
    assert pack(papers(2), budget_tokens=5) == []
