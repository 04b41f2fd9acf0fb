from __future__ import annotations

from fastapi import APIRouter

from assistant.api.deps import AssistantDep
from assistant.schemas import AskRequest, AskResponse, ErrorResponse

router = APIRouter(tags=["answers"])


@router.post(
    "/ask",
    response_model=AskResponse,
    responses={503: {"model": ErrorResponse}, 504: {"model": ErrorResponse}},
)
async def ask(request: AskRequest, assistant: AssistantDep) -> AskResponse:
    """Answer a question from the papers, citing the sources it used as [n]."""
    return await assistant.ask(request)
