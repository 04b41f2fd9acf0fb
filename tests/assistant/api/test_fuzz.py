"""Property-based fuzzing of the OpenAPI schema with schemathesis: no request gets a 5xx.

(schemathesis' own pytest plugin does not run under pytest 9's subtests, so each operation's
hypothesis strategy is driven here directly: positive and negative generation modes.)
"""

from __future__ import annotations

import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.schemas import BaseSchema

from assistant.api.main import create_app
from assistant.api.services import build_services
from ingest.embed import Embedder
from scholia.settings import Settings
from tests.assistant.api.conftest import configured
from tests.fakes import FakeLLM

OPERATIONS = [
    ("POST", "/ask"),
    ("POST", "/search"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/papers"),
    ("POST", "/papers"),
    ("GET", "/papers/{paper_id}"),
    ("DELETE", "/papers/{paper_id}"),
    ("GET", "/papers/jobs/{job_id}"),
]
EXAMPLES = {"POST": 40, "GET": 5, "DELETE": 5}
# The route template the metrics label a request with, where it differs from the schema's path.
ROUTES = {"/papers/{paper_id}": "/papers/{paper_id:path}"}


@pytest.fixture(scope="module")
def api_schema(
    indexed_settings: Settings, embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
) -> BaseSchema:
    # A copy of the shared index: fuzzed uploads and removals must not change it.
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    shutil.copytree(indexed_settings.data_dir, data_dir, symlinks=True)
    copied = indexed_settings.model_copy(update={"data_dir": data_dir})
    app_settings = configured(copied, rate_limit_per_minute=0)
    services = build_services(app_settings, llm=FakeLLM(), embedder=embedder)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(app_settings, services))


def test_every_operation_is_fuzzed(api_schema: BaseSchema) -> None:
    results = list(api_schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results)
    found = {(r.ok().method.upper(), r.ok().path) for r in results if isinstance(r, Ok)}
    assert found == set(OPERATIONS)


CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if method == "POST" or mode is GenerationMode.POSITIVE  # nothing to negate without a body
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_no_request_gets_a_server_error(
    api_schema: BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[method],
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=[not_a_server_error])

    fuzz()
    served = api_schema.app.state.metrics.requests.collect()[0].samples
    assert any(sample.labels["route"] == ROUTES.get(path, path) for sample in served)
