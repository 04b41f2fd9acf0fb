"""The library on real parts: a paper uploaded to the live server (real vLLM, embedded Chroma)
answers at once (its record too: who wrote it), and is gone from both indexes when removed."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LiveServer, ask
from tests.fakes import states
from tests.servers import finished_job

pytestmark = pytest.mark.e2e

WOMBAT = {
    "id": "wombatscan-e2e",
    "title": "WombatScan: Mapping Wombat Burrows from Satellite Images",
    "abstract": "Wombats dig long burrows in the Australian bush. WombatScan located 3,870 wombat "
    "burrows in the Snowy Mountains from satellite images, with a precision of 91 percent. "
    "It runs on a single laptop CPU.",
    "authors": ["Kim Burrow", "Lee Digger"],  # its record: an abstract never says who wrote it
}
QUESTION = "How many wombat burrows did WombatScan locate in the Snowy Mountains?"


def _job(server: LiveServer, job_id: str, timeout_s: float = 300) -> dict[str, object]:
    return finished_job(lambda path: httpx.get(server.url + path).json(), job_id, timeout_s, 1)


def _ask(server: LiveServer, question: str) -> dict[str, Any]:
    return dict(ask(server, question))


def test_an_uploaded_paper_answers_at_once_and_goes_when_removed(live_server: LiveServer) -> None:
    upload = httpx.post(
        live_server.url + "/papers",
        content=json.dumps(WOMBAT) + "\n",
        headers={"content-type": "application/x-ndjson"},
        timeout=60,
    )
    assert upload.status_code == 202, upload.text
    try:
        job = _job(live_server, upload.json()["id"])
        assert job["state"] == "done" and job["added"] == 1, job
        body = _ask(live_server, QUESTION)
        cited = [s["title"] for s in body["sources"] if s["rank"] in body["citations"]]
        assert not body["declined"] and states(str(body["answer"]), "3,870"), body
        assert cited and cited[0] == WOMBAT["title"], body
        who = _ask(live_server, "Who wrote WombatScan?")
        assert not who["declined"] and who["citations"], who
        assert "Kim Burrow; Lee Digger" in str(who["answer"]), who
        found = httpx.get(live_server.url + "/papers", params={"q": "wombat burrows"}).json()
        assert found["papers"][0]["id"] == WOMBAT["id"]
    finally:
        removed = httpx.delete(f"{live_server.url}/papers/{WOMBAT['id']}", timeout=120)
    assert removed.status_code == 200, removed.text
    after = _ask(live_server, QUESTION)
    assert WOMBAT["title"] not in [s["title"] for s in after["sources"]], after
    assert after["declined"], after
