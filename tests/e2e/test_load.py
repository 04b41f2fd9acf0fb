"""Under load, for real: 32 clients for 60 s mixing /ask, /search and bad requests against the
app and the live server's vLLM (CPU). Latency is reported, not asserted; what must hold is that
every answer is a correct one and that memory does not keep growing."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from eval.bench_load import ASK, BAD_KINDS, EXPECTED, SEARCH, TOLERATED_ASK_STATUSES, LoadTest
from eval.harness import dev_questions
from scholia.settings import PROJECT_ROOT
from tests.e2e.conftest import LiveServer, scholia_app

pytestmark = pytest.mark.e2e

CLIENTS, DURATION_S, WARMUP_S = 32, 60.0, 15.0
# Under this load on two cores an /ask takes 80-110 s (8 long prompts prefilled at once while the
# other 24 clients keep the CPU busy), close to the default 120 s LLM timeout. A 504 is a
# correct answer, but this test wants answers, so the bound is raised where a slower machine
# would otherwise turn every /ask into a 504; the client waits a minute longer than the app.
LLM_TIMEOUT_S = 300.0
# After 15 s at full concurrency the app's memory holds its working set: the embedder, the BM25
# index, a full thread pool with its malloc arenas, requests in every stage. Allocator caches
# then level off (+2, +50 and +61 MB from there to the end in three runs here, ~5 % at most;
# with glibc's default 16 arenas it was 7.7-10.2 %, now 2: +3.6 %, on an AMD EPYC family 25
# model 17 with avx512_bf16; docs/performance.md),
# while a leak keeps adding per request: ~5,000 requests a run, so 10 % of that RSS (~125 MB)
# is crossed by a leak of ~25 KB a request — about one kept /search response.
MAX_GROWTH_AFTER_WARMUP = 0.10
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "load"


def test_32_clients_for_60_s_get_only_correct_answers_and_memory_levels_off(
    live_server: LiveServer, tmp_path: Path
) -> None:
    env = {
        "SCHOLIA_LLM_URL": live_server.llm_url,
        # 32 clients on one loopback address would be rate-limited (120/min, burst 30).
        "SCHOLIA_SERVER_RATE_LIMIT_PER_MINUTE": "0",
        "SCHOLIA_LLM_TIMEOUT_S": str(LLM_TIMEOUT_S),
    }
    with scholia_app(tmp_path, env) as app:
        # Each route answered once first: what the first /ask allocates (the verifier's
        # sentence vectors, the LLM client's pool) is the working set, not growth; under load
        # the first /ask ends long after the warm-up.
        question = {"question": dev_questions(1, answerable=True)[0], "stream": False}
        httpx.post(app.url + "/ask", json=question, timeout=LLM_TIMEOUT_S).raise_for_status()
        httpx.post(app.url + "/search", json={"query": question["question"]}, timeout=60)
        report = LoadTest(
            app.url,
            clients=CLIENTS,
            duration_s=DURATION_S,
            warmup_s=WARMUP_S,
            pid=app.process.pid,
            request_timeout_s=LLM_TIMEOUT_S + 60,
        ).run(ARTIFACTS)
        print((ARTIFACTS / "load.md").read_text())
        # The app survived and still answers.
        assert httpx.get(app.url + "/ready", timeout=30).status_code == 200

    by_kind = report["by_kind"]
    assert report["server_errors_other_than_503_504"] == 0, report["unexpected_examples"]
    for kind in BAD_KINDS:  # each refused with its 4xx and a JSON detail (judged per answer)
        row = by_kind[kind]
        assert row["requests"] > 0 and row["unexpected"] == 0, (kind, row)
        assert row["statuses"] == {str(EXPECTED[kind][1]): row["requests"]}, (kind, row)
    assert by_kind[SEARCH]["statuses"] == {"200": by_kind[SEARCH]["requests"]}, by_kind[SEARCH]
    ask_statuses = by_kind[ASK]["statuses"]
    assert ask_statuses.get("200", 0) > 0, ask_statuses
    assert set(ask_statuses) <= {"200", *map(str, TOLERATED_ASK_STATUSES)}, ask_statuses
    assert report["unexpected"] == 0, report["unexpected_examples"]  # nor transport errors

    rss = report["rss_mb"]
    assert rss["after"] <= rss["after_warmup"] * (1 + MAX_GROWTH_AFTER_WARMUP), json.dumps(
        {key: value for key, value in rss.items() if key != "samples"}
    )
