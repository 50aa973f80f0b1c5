"""`AsyncClient`: the asyncio client (httpx.AsyncClient), the same API as `Client`, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import httpx

from aeserve.client.errors import ConnectionFailed
from aeserve.client.protocol import (
    RETRY_STATUSES,
    Protocol,
    Request,
    ScoreOptions,
    retry_delay,
)
from aeserve.client.results import (
    AnomalyScores,
    Embeddings,
    FeedbackResult,
    ModelInfo,
    ModelSummary,
    Reconstructions,
    StreamResult,
)
from aeserve.client.sync import DEFAULT_TIMEOUT, auth_headers


class AsyncClient:
    """`Client`'s twin for asyncio: `await client.anomaly_score(rows)`; `async with` closes it."""

    def __init__(self, base_url: str, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, *, retries: int = 3, backoff: float = 0.1,
                 max_backoff: float = 5.0, transport: str = "auto",
                 max_rows_per_request: int = 8192,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self._protocol = Protocol(transport, max_rows_per_request)
        self._own_http = http_client is None
        self._http = http_client or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self._http.headers.update(auth_headers(api_key))

    async def anomaly_score(self, rows: Any, model: str | None = None,
                            version: int | None = None, *, threshold: float | None = None,
                            explain: bool = False, top_k: int | None = None,
                            ids: Any = None) -> AnomalyScores:
        """As `Client.anomaly_score`."""
        options = ScoreOptions(threshold, explain, top_k, ids)
        return await self._run(self._protocol.infer("anomaly-score", rows, model, version,
                                                    options))

    async def encode(self, rows: Any, model: str | None = None,
                     version: int | None = None) -> Embeddings:
        return await self._run(self._protocol.infer("encode", rows, model, version))

    async def reconstruct(self, rows: Any, model: str | None = None,
                          version: int | None = None) -> Reconstructions:
        return await self._run(self._protocol.infer("reconstruct", rows, model, version))

    async def stream(self, model: str, readings: dict[str | int, Any], *,
               explain: bool = False) -> StreamResult:
        """Readings of named series for a windowed (or any) model: each reading's score, verdict
        and alarm state, the series' last readings and alarm kept by the server between calls.
        `readings` maps each series to its new rows, oldest first. Not resent when the
        connection breaks (the server may have taken the readings already)."""
        return await self._run(self._protocol.stream(model, readings, explain))

    async def models(self) -> list[ModelSummary]:
        return await self._run(self._protocol.models())

    async def model(self, name: str) -> ModelInfo:
        return await self._run(self._protocol.model(name))

    async def feedback(self, model: str, ids: Any, labels: Any) -> FeedbackResult:
        """As `Client.feedback`."""
        return await self._run(self._protocol.feedback(model, ids, labels))

    async def ready(self) -> bool:
        try:
            return await self._run(self._protocol.ready())
        except ConnectionFailed:
            return False

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    async def _run(self, operation: Generator[Request, Any, Any]) -> Any:
        try:
            request = next(operation)
            while True:
                request = operation.send(await self._send(request))
        except StopIteration as done:
            return done.value

    async def _send(self, request: Request) -> httpx.Response:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = await self._http.request(request.method, request.path,
                                                    content=request.content,
                                                    headers=request.headers)
            except httpx.TransportError as exc:
                if last or not request.resend:
                    raise ConnectionFailed(
                        f"{request.method} {request.path}: {type(exc).__name__}: {exc} "
                        f"(after {attempt + 1} attempt{'s' if attempt else ''}"
                        + ("" if request.resend else "; not resent: the server may have taken "
                                                     "it already") + ")") from exc
                await asyncio.sleep(retry_delay(attempt, self.backoff, self.max_backoff))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                await asyncio.sleep(retry_delay(attempt, self.backoff, self.max_backoff,
                                                response))
                continue
            return response
        raise AssertionError("unreachable")
