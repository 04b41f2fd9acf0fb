from __future__ import annotations

from fastapi import APIRouter

from assistant.api.deps import AssistantDep
from assistant.schemas import SearchRequest, SearchResponse

router = APIRouter(tags=["search"])


@router.post("/search", response_model=SearchResponse)
async def search(request: SearchRequest, assistant: AssistantDep) -> SearchResponse:
    """The papers that best match a query (hybrid dense + BM25), without generating an answer."""
    return SearchResponse(
        results=await assistant.search(request.query, request.top_k, request.filters)
    )
