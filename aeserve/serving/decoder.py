"""Large JSON bodies parsed in a helper process, beside the worker's event loop.

Why a process: simdjson's parse holds the GIL from start to end (pysimdjson releases it nowhere),
so a thread does not let the event loop run meanwhile. Under 4,096-row JSON load the parse alone
held the GIL 59% of the time (py-spy `--gil`) while a core sat a third idle. Why shared memory:
feeding the body through a pipe (ProcessPoolExecutor) halved throughput instead, since 2.5 MB
then cross the pipe in 64 kB pieces; here the body and the matrix are copied once each into
shared memory and only a few bytes cross the pipe.

Why not `multiprocessing`: its spawn start and its SharedMemory both start a resource-tracker
process (13 MB resident, for a worker that needs none). The helper is a plain subprocess, and the
shared memory anonymous files (memfd) handed to it as file descriptors: nothing has a name, so
nothing outlives the two processes however they end, and the container's /dev/shm size does not
bound it.

Only clean bodies are decoded there: the matrix of `{"instances": [[numbers]]}`, and the flat
tensor of an Open Inference Protocol request (`v2_codec.split_json`). Anything else, any
refusal (too many rows, NaN), and a helper that died come back as "not decoded", and the worker
decodes the body itself (in a codec thread, aeserve/serving/decoding.py) with `decode_instances`,
whose typed errors name the problem: the answers are the same either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
from multiprocessing.connection import Connection

import numpy as np
import orjson

from aeserve.serving.codecs import ABSENT, JSON_TYPES, decode_json_matrix, media_type
from aeserve.serving.errors import ServiceError

log = logging.getLogger("aeserve")

#: Larger bodies are decoded in the worker: the segments (the largest body seen, and twice its
#: size for the matrix, so at most 48 MB) are memory the worker holds for as long as it lives.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: Helpers that fail one after another (none answering a body) before the worker stops starting
#: them and decodes every body itself: a helper that cannot run must not be restarted per body.
MAX_FAILED_STARTS = 3

_REQUEST = struct.Struct("<qqqq")  # kind, body bytes, width, max rows
_REPLY = struct.Struct("<q")       # values decoded, or -1: not decoded (then, for V2: envelope)
INSTANCES, V2 = 0, 1  # the body's protocol: {"instances": ...} or an Open Inference request
_ATTACH = b"attach"   # the next two file descriptors on the side socket are the new segments
#: A helper that has not answered by then is taken for stuck: killed, and replaced later.
REPLY_TIMEOUT_S = 60.0
HAS_SHARED_MEMORY = hasattr(os, "memfd_create")  # Linux; elsewhere the worker decodes every body
#: The helper's program: the worker's own import path (`-P`: not the working directory's
#: modules first), so that it runs the same aeserve as the worker, installed or not.
_HELPER_MAIN = ("import json, sys; sys.path[:] = json.loads(sys.argv[3]); "
                "from aeserve.serving.decoder import serve; "
                "serve(int(sys.argv[1]), int(sys.argv[2]))")


class Segment:
    """Memory both processes map: an anonymous file, its pages reserved when it is made.

    A shared file is sparse: a page is only taken when first written, and a write that finds no
    page to take kills the process with SIGBUS instead of raising. Reserving every page at
    creation (`posix_fallocate`) makes this the one moment the memory is asked for: a refusal
    (ENOSPC, ENOMEM; no descriptor left, EMFILE) is a NoRoom here and the worker decodes the body,
    and no later write can fail. The pages count towards the worker's memory (a container's
    limit), not towards /dev/shm.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        try:
            self.fd = os.memfd_create("aeserve-json", os.MFD_CLOEXEC)
        except OSError as exc:
            raise NoRoom(f"no shared segment of {size} bytes: {exc.strerror or exc}") from None
        try:
            os.posix_fallocate(self.fd, 0, size)
            self.buf = mmap.mmap(self.fd, size)
        except OSError as exc:
            os.close(self.fd)
            raise NoRoom(f"no room for a {size}-byte shared segment: "
                         f"{exc.strerror or exc}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError, BufferError):
            self.buf.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def serve(channel_fd: int, side_fd: int) -> None:
    """The helper's loop: decode the bodies the worker writes, reply through the channel.

    Ctrl-C, and a SIGTERM sent to the whole process group (systemd, `kill -- -PGID`), reach the
    helper too; the worker ends it by closing the channel once it has drained, so it ignores
    both: a helper gone first would be started again for the draining worker's next body."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _serve(Connection(channel_fd), socket.socket(fileno=side_fd))


def _serve(conn: Connection, side: socket.socket) -> None:
    segments: tuple[mmap.mmap, mmap.mmap] | None = None
    while True:
        try:
            message = conn.recv_bytes()
        except EOFError:
            return
        if message == _ATTACH:
            _, fds, _, _ = socket.recv_fds(side, 1, 2)
            if segments is not None:
                for segment in segments:
                    segment.close()
            segments = (mmap.mmap(fds[0], 0), mmap.mmap(fds[1], 0))
            for fd in fds:
                os.close(fd)  # the mappings keep the files
            continue
        kind, length, width, max_rows = _REQUEST.unpack(message)
        assert segments is not None
        body = segments[0][:length]
        envelope = b""
        try:
            if kind == V2:
                # Imported on the first V2 body: the Open Inference Protocol's schemas bring
                # pydantic, 10 MB of this process's memory that instances-only traffic never uses.
                from aeserve.serving.v2_codec import split_json

                split = split_json(body)
                envelope, values = split if split is not None else (b"", None)
            else:
                decoded = decode_json_matrix(body, width, max_rows)
                values = None if decoded is None else decoded[0]
                if decoded is not None and decoded[1] is not ABSENT:
                    envelope = orjson.dumps(decoded[1])  # the ids, for the worker to check
        except (ServiceError, orjson.JSONEncodeError):
            values = None
        if values is None:
            conn.send_bytes(_REPLY.pack(-1))
            continue
        out = np.frombuffer(segments[1], dtype=np.float32, count=values.size)
        out[:] = values.ravel()
        del out
        conn.send_bytes(_REPLY.pack(values.size) + envelope)


class NoRoom(Exception):
    """Too little memory for this body's segments: the worker decodes it."""


class DecoderProcess:
    """One helper process per worker, started on the first body that needs it."""

    def __init__(self, min_bytes: int) -> None:
        self.min_bytes = min_bytes  # 0: never
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._side: socket.socket | None = None
        self._segments: tuple[Segment, Segment] | None = None
        self._lock = asyncio.Lock()
        self._failures = 0  # helpers that stopped one after another, none answering a body

    def wants(self, body: bytes, content_type: str | None) -> bool:
        return (0 < self.min_bytes <= len(body) <= MAX_BODY_BYTES and HAS_SHARED_MEMORY
                and not self._given_up and media_type(content_type) in JSON_TYPES)

    @property
    def _given_up(self) -> bool:
        """Too many helpers in a row stopped unanswered: the worker decodes every body."""
        return self._failures >= MAX_FAILED_STARTS

    async def matrix(self, body: bytes, width: int, max_rows: int
                     ) -> tuple[np.ndarray, object] | None:
        """(the float32 [N, width] matrix, the `"ids"` value unchecked or ABSENT) of a clean
        `{"instances": [[numbers]]}` body, parsed in the helper process; None when the helper
        declined it (anything else, any refusal) or could not run: the caller then decodes the
        body itself, off the event loop."""
        reply = await self._run(INSTANCES, body, width, max_rows)
        if reply is None:
            return None
        return reply[0].reshape(-1, width), orjson.loads(reply[1]) if reply[1] else ABSENT

    async def split_v2(self, body: bytes) -> tuple[bytes, np.ndarray] | None:
        """`v2_codec.split_json(body)`, computed in the helper process (None: not decoded)."""
        reply = await self._run(V2, body, 0, 0)
        return None if reply is None else (reply[1], reply[0])

    async def _run(self, kind: int, body: bytes, width: int, max_rows: int
                   ) -> tuple[np.ndarray, bytes] | None:
        """(the values, the rest of the reply), or None when the helper declined or failed."""
        async with self._lock:  # one body at a time in the helper; the others wait here
            if self._given_up:
                return None
            try:
                reply = await self._decode(kind, body, width, max_rows)
            except NoRoom as exc:
                log.warning("%s; decoding in the worker", exc)
            except (OSError, EOFError, ValueError, TimeoutError):  # the helper died or hangs:
                # this body is decoded here, the next one starts a new helper
                self._end(grace_s=0.0)
                self._failures += 1
                if not self._given_up:
                    log.warning("the JSON decoder process stopped; decoding in the worker")
                else:
                    log.error("the JSON decoder process stopped %d times in a row; the worker "
                              "decodes every body from now on", self._failures)
            except BaseException:  # cancelled while waiting: its reply would answer the next
                self._end(grace_s=0.0)  # body, so the helper goes
                raise
            else:
                self._failures = 0
                return reply
        return None

    async def _decode(self, kind: int, body: bytes, width: int, max_rows: int
                      ) -> tuple[np.ndarray, bytes] | None:
        conn = self._ready(len(body))
        body_segment, out_segment = self._segments
        body_segment.buf[:len(body)] = body
        conn.send_bytes(_REQUEST.pack(kind, len(body), width, max_rows))
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        loop.add_reader(conn.fileno(), lambda: readable.done() or readable.set_result(None))
        try:
            await asyncio.wait_for(readable, REPLY_TIMEOUT_S)
        finally:
            loop.remove_reader(conn.fileno())
        reply = conn.recv_bytes()
        (n_values,) = _REPLY.unpack_from(reply)
        if n_values < 0:
            return None
        values = np.frombuffer(out_segment.buf, dtype=np.float32, count=n_values).copy()
        return values, reply[_REPLY.size:]

    def _ready(self, body_bytes: int) -> Connection:
        """The connection to a running helper whose segments hold `body_bytes`."""
        if self._process is None or self._process.poll() is not None:
            self._end(grace_s=0.0)
            self._start()
        if self._segments is None or self._segments[0].size < body_bytes:
            self._release_segments()
            size = max(body_bytes, 1 << 20)
            # A number takes at least two bytes of JSON ("1,") and four as float32.
            body_segment = Segment(size)
            try:
                out_segment = Segment(2 * size)
            except NoRoom:
                body_segment.close()
                raise
            self._segments = (body_segment, out_segment)
            socket.send_fds(self._side, [b"s"], [body_segment.fd, out_segment.fd])
            self._conn.send_bytes(_ATTACH)
        return self._conn

    def _start(self) -> None:
        """A fresh helper: this interpreter running `serve`, the two sockets its only link.

        Started with subprocess rather than fork (the worker has threads by now) or
        multiprocessing's spawn (which brings its resource tracker)."""
        channel, child_channel = socket.socketpair()
        side, child_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        fds = (child_channel.fileno(), child_side.fileno())
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-P", "-c", _HELPER_MAIN, *map(str, fds),
                 json.dumps(sys.path)], pass_fds=fds, stdin=subprocess.DEVNULL)
        except OSError:
            for end in (channel, side):
                end.close()
            raise
        finally:
            child_channel.close()
            child_side.close()
        self._conn, self._side = Connection(channel.detach()), side

    def _release_segments(self) -> None:
        if self._segments is not None:
            for segment in self._segments:
                segment.close()
            self._segments = None

    def shutdown(self) -> None:
        """The worker stops: the closed channel ends the helper's loop."""
        self._end(grace_s=2.0)

    def _end(self, grace_s: float) -> None:
        """Close the channel and end the helper: given `grace_s` to leave its loop, then killed
        (it holds nothing). A helper that failed gets none, so the event loop never waits on it."""
        self._close_channel()
        if self._process is not None:
            try:
                self._process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        self._release_segments()

    def _close_channel(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None
        if self._side is not None:
            self._side.close()
            self._side = None
