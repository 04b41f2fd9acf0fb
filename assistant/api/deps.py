"""FastAPI dependencies as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from assistant.api.jobs import IngestJobs
from assistant.api.metrics import Metrics
from assistant.api.services import Services
from assistant.library import jobs_of
from assistant.pipeline import Assistant


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_assistant(request: Request) -> Assistant:
    return get_services(request).assistant


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_jobs(request: Request) -> IngestJobs:
    return jobs_of(request.app)


ServicesDep = Annotated[Services, Depends(get_services)]
AssistantDep = Annotated[Assistant, Depends(get_assistant)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
JobsDep = Annotated[IngestJobs, Depends(get_jobs)]
