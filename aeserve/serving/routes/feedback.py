"""POST /models/{name}/feedback: labels for logged predictions (the prediction log's join).

Operators label what the server answered (`1`: the row was an anomaly, `0`: it was not), by the
ids their requests sent. Each label is stored in the prediction log and, where its prediction is
found, counted by outcome in `aeserve_feedback_labels_total`: the figures from which precision,
recall and a better threshold follow (`aeserve evaluate --from-log`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from aeserve.artifact.errors import schema_problems
from aeserve.artifact.prediction_log import normalize_ids
from aeserve.serving.asgi import request_body
from aeserve.serving.deps import get_repository
from aeserve.serving.errors import (
    InvalidParameter,
    PredictionLogOff,
    PredictionLogUnwritable,
    TooManyRows,
    UnknownModel,
)
from aeserve.serving.repository import ModelRepository
from aeserve.serving.schemas.core import ErrorResponse, FeedbackRequest, FeedbackResponse

router = APIRouter(tags=["models"])

#: Unmatched ids named in an answer (all are counted).
MAX_NAMED_UNMATCHED = 100


#: Bodies up to this size are parsed on the event loop; larger ones in a worker thread, so that
#: a large batch of labels never stalls the requests beside it.
INLINE_PARSE_BYTES = 64 * 1024


@router.post("/models/{name}/feedback", summary="Labels for logged predictions, by id",
             response_model=FeedbackResponse,
             responses={code: {"model": ErrorResponse, "description": why} for code, why in (
                 (401, "missing or wrong API key"), (404, "unknown model"),
                 (408, "the body did not arrive in time"), (409, "the prediction log is off"),
                 (413, "too many labels, or too large a body"),
                 (422, "not a feedback request"), (503, "the log refused the labels"))},
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": FeedbackRequest.model_json_schema()}}}})
async def post_feedback(name: str, request: Request,
                        repository: Annotated[ModelRepository, Depends(get_repository)]
                        ) -> dict[str, Any]:
    request.state.endpoint = "feedback"
    if name not in repository.models:
        raise UnknownModel(f"unknown model {name!r}", model=name,
                           available=sorted(repository.models))
    prediction_log = request.app.dataplane.prediction_log
    if prediction_log is None:
        raise PredictionLogOff("feedback joins labels to the prediction log, which is off: "
                               "start the server with AESERVE_PREDICTION_LOG=DIR")
    settings = repository.settings
    body = await request_body(request, settings.max_body_bytes, settings.body_timeout_s)
    feedback = (parse_feedback(body) if len(body) <= INLINE_PARSE_BYTES
                else await run_in_threadpool(parse_feedback, body))
    max_rows = settings.max_rows
    if len(feedback.ids) > max_rows:
        raise TooManyRows(f"{len(feedback.ids)} labels exceed the limit of {max_rows}",
                          rows=len(feedback.ids), max_rows=max_rows)
    try:
        result = await run_in_threadpool(prediction_log.feedback, name,
                                         normalize_ids(feedback.ids),
                                         [int(label) for label in feedback.labels])
    except OSError as exc:  # the labels were not stored: the client may send them again
        raise PredictionLogUnwritable(f"the prediction log could not store the labels: "
                                      f"{exc.strerror or exc}") from None
    return {"model": name, "received": result.received, "matched": result.matched,
            "unmatched": len(result.unmatched_ids),
            "unmatched_ids": result.unmatched_ids[:MAX_NAMED_UNMATCHED],
            "outcomes": result.outcomes}


def parse_feedback(body: bytes) -> FeedbackRequest:
    """The body as a `FeedbackRequest`, or the 422 a declared pydantic body would have given."""
    try:
        return FeedbackRequest.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidParameter(schema_problems(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()], "body", limit=5)
            or "not a feedback request") from None
