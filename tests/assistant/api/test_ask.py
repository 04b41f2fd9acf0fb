from fastapi.testclient import TestClient

from tests.fakes import FakeLLM, states

PRODIFF_Q = "How many iterations does ProDiff need to synthesize high-fidelity mel-spectrograms?"


def test_ask_returns_a_cited_answer_with_the_contract_fields(client: TestClient) -> None:
    response = client.post("/ask", json={"question": PRODIFF_Q})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {
        "answer",
        "declined",
        "citations",
        "sources",
        "model",
        "timings_ms",
        "usage",
    }
    assert set(body["timings_ms"]) >= {"retrieve", "generate", "total"}
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens"}
    assert not body["declined"]
    assert states(body["answer"], "2")
    ranks = {source["rank"]: source for source in body["sources"]}
    assert body["citations"] and all(rank in ranks for rank in body["citations"])
    cited_titles = [ranks[rank]["title"] for rank in body["citations"]]
    assert any(title.startswith("ProDiff") for title in cited_titles)
    assert body["sources"][0]["cited"]  # cited sources first
    for source in body["sources"]:
        assert set(source) >= {"rank", "id", "title", "text", "score"}


def test_top_k_limits_sources(client: TestClient) -> None:
    body = client.post("/ask", json={"question": PRODIFF_Q, "top_k": 2}).json()
    assert len(body["sources"]) <= 2


def test_invalid_input_is_422_with_a_readable_message(client: TestClient) -> None:
    for payload in ({"question": ""}, {"question": "x" * 4001}, {"question": "q", "top_k": 0}, {}):
        response = client.post("/ask", json=payload)
        assert response.status_code == 422
        assert isinstance(response.json()["detail"], str) and response.json()["detail"]
    bad_role = {"question": "q", "history": [{"role": "system", "content": "x"}]}
    assert "role" in client.post("/ask", json=bad_role).json()["detail"]


def test_a_filter_on_an_operator_instead_of_a_field_is_422(client: TestClient) -> None:
    # "$and", "$" … would reach Chroma as operators, not as metadata fields.
    for route, payload in (("/ask", {"question": "q"}), ("/search", {"query": "q"})):
        for key in ("$", "$and", "", "a b"):
            response = client.post(route, json={**payload, "filters": {key: False}})
            assert response.status_code == 422, (route, key)
            assert "filters" in response.json()["detail"]
    ok = client.post("/search", json={"query": "diffusion", "filters": {"published": "1999"}})
    assert ok.status_code == 200 and ok.json()["results"] == []


def test_llm_down_is_503_with_the_retrieved_sources(client: TestClient, fake_llm: FakeLLM) -> None:
    fake_llm.down = True
    response = client.post("/ask", json={"question": PRODIFF_Q})
    assert response.status_code == 503
    body = response.json()
    assert "down" in body["detail"]
    assert body["sources"] and body["sources"][0]["title"].startswith("ProDiff")


def test_unanswerable_question_is_declined_with_closest_papers(
    client: TestClient, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = "ProDiff reaches an FID of 3.7 on ImageNet [1]."
    body = client.post("/ask", json={"question": "What FID does ProDiff reach on ImageNet?"}).json()
    assert body["declined"]
    assert body["citations"] == []
    assert body["answer"].startswith("The collection does not say.")
    assert body["unsupported"] == [0]


def test_history_is_condensed_before_retrieval(client: TestClient, fake_llm: FakeLLM) -> None:
    history = [
        {"role": "user", "content": PRODIFF_Q},
        {"role": "assistant", "content": "ProDiff needs 2 iterations [1]."},
    ]
    body = client.post("/ask", json={"question": "and how fast is it?", "history": history}).json()
    assert "Standalone question" in fake_llm.calls[0][-1].content
    assert body["question"] == "and how fast is it? (about the papers discussed)"  # condensed


def test_search_returns_ranked_papers(client: TestClient) -> None:
    response = client.post(
        "/search", json={"query": "pipelined model parallelism for GNN", "top_k": 3}
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 3
    assert results[0]["title"].startswith("GNNPipe")
    assert [r["rank"] for r in results] == [1, 2, 3]


def test_health_and_root_redirect(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    response = client.get("/", follow_redirects=False)
    assert response.status_code in {302, 307} and response.headers["location"].startswith("/ui")


def test_a_garbled_draft_becomes_a_quote_from_the_right_paper(
    client: TestClient, fake_llm: FakeLLM
) -> None:
    # What the 0.5B model often writes: the title back, no answer.
    fake_llm.reply = (
        "[1]. ProDiff: Progressive Fast Diffusion Model For High-Quality Text-to-Speech"
    )
    body = client.post("/ask", json={"question": PRODIFF_Q}).json()
    assert not body["declined"], body["answer"]
    assert "2 iterations" in body["answer"] and body["answer"].endswith("]")
    cited = [s["title"] for s in body["sources"] if s["rank"] in body["citations"]]
    assert cited and cited[0].startswith("ProDiff")


def test_a_garbled_draft_about_a_detail_the_paper_lacks_is_still_declined(
    client: TestClient, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = "CrisisTransformers was pre-trained with 4096 examples."
    question = "What batch size was used to pre-train CrisisTransformers?"
    body = client.post("/ask", json={"question": question}).json()
    assert body["declined"], body["answer"]


def test_a_false_figure_in_the_question_is_corrected(client: TestClient, fake_llm: FakeLLM) -> None:
    fake_llm.reply = "ProDiff is only 5x faster than real time [1]."
    question = "Why is ProDiff only 5x faster than real time on a 2080Ti GPU?"
    body = client.post("/ask", json={"question": question}).json()
    assert not body["declined"]
    assert "do not report 5" in body["answer"] and "24x" in body["answer"], body["answer"]
