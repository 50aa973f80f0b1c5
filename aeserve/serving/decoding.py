"""Where a body is decoded and an answer encoded: one interface over three places.

- inline, on the event loop: small JSON bodies and every binary body (microseconds of work; a
  hand-off to a thread would cost more than the work itself);
- the decoder process (aeserve/serving/decoder.py): large, clean JSON bodies, whose simdjson parse
  would otherwise hold the GIL, and with it the event loop, for milliseconds;
- a codec thread: the other large bodies (named features, mistakes to be named), and large
  answers.

The data plane asks for rows or a V2 request and never knows which place answered: the answers,
typed errors included, are the same wherever a body was decoded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from aeserve.serving import v2_codec
from aeserve.serving.codecs import BINARY_TYPE, checked_ids, decode_request, media_type
from aeserve.serving.decoder import DecoderProcess

T = TypeVar("T")

#: JSON bodies up to this size are decoded on the event loop; larger ones elsewhere.
INLINE_BODY_BYTES = 64 * 1024
#: Answers of up to this many values are encoded on the event loop.
INLINE_RESPONSE_VALUES = 16 * 1024


class BodyDecoder:
    """Decodes request bodies and encodes answers, each in the place that suits its size."""

    def __init__(self, threads: int, process_min_bytes: int) -> None:
        # A small, bounded pool: each thread that parses a large body keeps its allocator
        # arena, so an unbounded pool would grow the resident memory.
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="codec")
        self._process = DecoderProcess(process_min_bytes)

    @staticmethod
    def decodes_inline(body: bytes, content_type: str | None) -> bool:
        """Whether `instances` would decode this body on the event loop: callers on the hot
        path then call `decode_request` themselves and save a coroutine."""
        return len(body) <= INLINE_BODY_BYTES or media_type(content_type) == BINARY_TYPE

    async def instances(self, body: bytes, content_type: str | None,
                        feature_names: Sequence[str], max_rows: int
                        ) -> tuple[np.ndarray, list[str | int] | None]:
        """`{"instances": ...}`, float32 rows or `.npy` as a float32 [N, d] matrix, and the
        JSON body's ids (`codecs.decode_request`)."""
        if self.decodes_inline(body, content_type):
            return decode_request(body, content_type, feature_names, max_rows)
        if self._process.wants(body, content_type):
            decoded = await self._process.matrix(body, len(feature_names), max_rows)
            if decoded is not None:
                return decoded[0], checked_ids(decoded[1], len(decoded[0]))
        return await self.in_thread(decode_request, body, content_type, feature_names,
                                    max_rows)

    async def v2(self, body: bytes, header_length: str | None, width: int,
                 max_rows: int) -> v2_codec.V2Request:
        """An Open Inference Protocol request (JSON, or the binary tensor extension)."""
        if len(body) <= INLINE_BODY_BYTES:
            return v2_codec.decode_request(body, header_length, width, max_rows)
        if header_length is None and self._process.wants(body, "application/json"):
            presplit = await self._process.split_v2(body)
            if presplit is not None:  # what is left to do is small: on the loop
                return v2_codec.decode_request(body, None, width, max_rows, presplit)
        return await self.in_thread(v2_codec.decode_request, body, header_length, width,
                                    max_rows)

    @staticmethod
    def encodes_inline(values: int) -> bool:
        """Whether `encode` would write an answer of this many values on the event loop."""
        return values <= INLINE_RESPONSE_VALUES

    async def encode(self, values: int, fn: Callable[..., T], *args) -> T:
        """`fn(*args)`, on the loop for an answer of up to INLINE_RESPONSE_VALUES values."""
        if self.encodes_inline(values):
            return fn(*args)
        return await self.in_thread(fn, *args)

    async def in_thread(self, fn: Callable[..., T], *args) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    def shutdown(self) -> None:
        self._threads.shutdown(wait=False)
        self._process.shutdown()
