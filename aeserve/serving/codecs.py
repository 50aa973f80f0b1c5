"""Request bodies to float32 matrices, and response payloads to JSON bytes.

Hot path: `{"instances": [[...], ...]}` goes through simdjson's `as_buffer`, which fills one C
buffer of doubles without creating a Python object per number; a handful of cheap checks
(row count x width, one '[' per row, every row's length) prove the body was a clean matrix. Anything
else (named features, mistakes) falls back to orjson, whose slower, explicit walk produces the error
message that names the problem, its row and its column.

Binary bodies: `application/octet-stream` (little-endian float32, row-major, width from the model)
and `application/x-npy` (one 2-D numeric array) are read with `np.frombuffer` / `np.load`.
"""

from __future__ import annotations

import functools
import io
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import numpy as np
import orjson
import simdjson

from aeserve.artifact import rows as row_checks
from aeserve.artifact.names import encodes_as_utf8
from aeserve.serving.errors import (
    EmptyInstances,
    FeatureMismatch,
    InvalidIds,
    InvalidInstances,
    MalformedJSON,
    MissingInstances,
    NonFinite,
    NonNumeric,
    RaggedRows,
    ServiceError,
    TooManyRows,
    UnsupportedMediaType,
    WrongWidth,
)

P = ParamSpec("P")
R = TypeVar("R")

JSON_TYPES = {"application/json", ""}
BINARY_TYPE = "application/octet-stream"
NPY_TYPE = "application/x-npy"


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode_instances(body: bytes, content_type: str | None, feature_names: Sequence[str],
                     max_rows: int) -> np.ndarray:
    """Decode a request body into a C-contiguous float32 array of shape [N, len(feature_names)]
    (its ids, if any, are checked and dropped: `decode_request` keeps them)."""
    return decode_request(body, content_type, feature_names, max_rows)[0]


def decode_request(body: bytes, content_type: str | None, feature_names: Sequence[str],
                   max_rows: int) -> tuple[np.ndarray, list[str | int] | None]:
    """(rows, ids): the body's float32 [N, len(feature_names)] matrix, and the JSON body's
    `"ids"` (one string or integer per row, checked) or None when it sends none."""
    width = len(feature_names)
    kind = media_type(content_type)
    ids: Any = ABSENT
    if kind in JSON_TYPES:
        decoded = decode_json_matrix(body, width, max_rows)
        if decoded is not None:  # counted and checked on the way
            return decoded[0], checked_ids(decoded[1], len(decoded[0]))
        rows, ids = _decode_json_general(body, feature_names, max_rows)
    elif kind == BINARY_TYPE:
        rows = _decode_float32_rows(body, width)
    elif kind == NPY_TYPE:
        rows = _decode_npy(body, width)
    else:
        raise UnsupportedMediaType(
            f"content type {kind!r} is not supported; send application/json, "
            f"{BINARY_TYPE} (float32 rows) or {NPY_TYPE}",
            supported=["application/json", BINARY_TYPE, NPY_TYPE])
    check_rows(rows, max_rows)
    return rows, checked_ids(ids, len(rows))


#: Longest id accepted (characters, or digits of an integer id): requests and feedback.
MAX_ID_LENGTH = 256

#: `"ids"` was not in the body (`"ids": null` is there, and refused).
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()

def decode_json_matrix(body: bytes, width: int, max_rows: int) -> tuple[np.ndarray, Any] | None:
    """(the float32 matrix, the `"ids"` value unchecked or ABSENT), or None when the body is
    anything but a clean `{"instances": [[numbers]]}`, with beside it at most a flat `"ids"`
    list and other keys of scalar values (which `decode_request` then decodes or refuses by
    name).

    No object of the parsed document outlives this call (see `json_document`); the row-count
    error is raised after they are gone.
    """
    shape: list[int] | None = None  # the rows' lengths, when they are not [N, width]
    try:
        with json_document(body) as document:
            if (isinstance(document, simdjson.Object) and len(document) > 1
                    and len(document) != len(set(document))):
                return None  # a repeated key: orjson's reading (the last one wins) decides
            instances = document["instances"]
            if not isinstance(instances, simdjson.Array):
                return None
            ids = ABSENT
            if "ids" in document:  # a top-level key: no scan of the body
                ids = document["ids"]
                if isinstance(ids, simdjson.Array):
                    ids = ids.as_list()
                elif isinstance(ids, simdjson.Object):
                    ids = ids.as_dict()
            n_rows = len(instances)
            flat = None
            if 0 < n_rows <= max_rows:
                flat = np.frombuffer(instances.as_buffer(of_type="d"), dtype=np.float64)
                # one row: its size is its length; several: each row's length (ragged rows can
                # add up to the right size)
                if flat.size != n_rows * width or (
                        n_rows > 1 and any(len(row) != width for row in instances)):
                    flat = None  # the wrong shape, or not a matrix at all
                    shape = _row_lengths(instances)
                    if shape is None:
                        return None
                elif count_brackets(body) != n_rows + 1 + isinstance(ids, list):
                    return None  # other arrays, or a '[' inside an id: the general decoder
    except (KeyError, TypeError, ValueError, RuntimeError):
        return None
    finally:
        document = instances = None  # the parser's next document needs this one gone
    if n_rows > max_rows:
        raise TooManyRows(f"{n_rows} rows exceed the limit of {max_rows}",
                          rows=n_rows, max_rows=max_rows)
    if shape is not None:
        # Raised by a callee, not from a local of this frame: the error holds its traceback,
        # which holds this frame, and a frame holding the error would make a cycle that keeps
        # the body alive until a full collection.
        check_row_lengths(shape, width)
        return None  # every row has the width, yet more numbers: nested deeper, named below
    if flat is None:
        return None
    if np.abs(flat).max() <= row_checks.FLOAT32_MAX:  # false for NaN: every value is finite
        return flat.astype(np.float32).reshape(n_rows, width), ids
    rows = row_checks.to_float32(flat).reshape(n_rows, width)
    check_rows(rows, max_rows)  # raises, naming the value
    return rows, ids



def checked_ids(ids: Any, rows: int) -> list[str | int] | None:
    """None when the body sent no ids; `ids` when it is a list of `rows` strings or integers,
    each at most `MAX_ID_LENGTH` long; else a typed 422 naming the problem."""
    if ids is ABSENT:
        return None
    if not isinstance(ids, list):
        raise InvalidIds(f'"ids" must be a list with one id per row, got {type(ids).__name__}')
    if len(ids) != rows:
        raise InvalidIds(f'"ids" has {len(ids)} ids for {rows} rows: send one id per row',
                         ids=len(ids), rows=rows)
    for i, value in enumerate(ids):
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidIds(f"id {i} is {value!r}: every id must be a string or an integer",
                             index=i)
        problem = id_problem(value)
        if problem is not None:
            raise InvalidIds(f"id {i} {problem}", index=i)
    return ids


def id_problem(value: str | int) -> str | None:
    """What is wrong with a string or integer as an id (the request codecs and the feedback
    schema ask the same), or None."""
    if len(value if isinstance(value, str) else str(value)) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters"
    if not encodes_as_utf8(value):
        return ("is not valid Unicode text (it holds a lone surrogate such as \\ud800, which "
                "no UTF-8 encoding has)")
    return None


def count_brackets(body: bytes) -> int:
    """How many '[' the body holds (`bytes.count` walks byte by byte: 6x slower on 2.5 MB)."""
    if len(body) < 4096:
        return body.count(b"[")
    return int(np.count_nonzero(np.frombuffer(body, dtype=np.uint8) == ord("[")))


def _row_lengths(instances: simdjson.Array) -> list[int] | None:
    """Each row's length, read from the parsed document, so that a 60 MB row of the wrong width
    is refused without orjson building millions of Python floats first; None when a row is not
    a list (then the general decoder names the problem)."""
    lengths = []
    for row in instances:
        if not isinstance(row, simdjson.Array):
            return None
        lengths.append(len(row))
    return lengths


_parsers = threading.local()

#: A parser keeps the buffers of the largest document it has parsed. One that parsed a body
#: larger than this is dropped afterwards, so a single 60 MB request does not leave each codec
#: thread (or the decoder process) holding buffers of its size.
KEEP_PARSER_BYTES = 4 * 1024 * 1024


class json_document:
    """simdjson's document of `body`, parsed by this thread's parser.

    The parser is reused per thread: making one allocates its buffers, which costs more than
    parsing a one-row body. It refuses to parse while objects of its previous document are
    alive, so a caller drops every object it took from the document by the end of its block.
    After a body over `KEEP_PARSER_BYTES` the parser is dropped, with its grown buffers. (A class
    rather than a generator: this runs on every request.)
    """

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __enter__(self) -> Any:
        parser = getattr(_parsers, "parser", None)
        if parser is None:
            parser = _parsers.parser = simdjson.Parser()
        try:
            return parser.parse(self.body)
        except BaseException:  # no block runs, so no __exit__: release here
            self.__exit__()
            raise

    def __exit__(self, *exc_info: object) -> None:
        if len(self.body) > KEEP_PARSER_BYTES:
            _parsers.parser = None


def _decode_json_general(body: bytes, feature_names: Sequence[str], max_rows: int
                         ) -> tuple[np.ndarray, Any]:
    payload = _parse_json(body)
    if not isinstance(payload, dict) or "instances" not in payload:
        raise MissingInstances('the body must be a JSON object with a list "instances"')
    return decode_rows(payload["instances"], feature_names, max_rows), payload.get("ids", ABSENT)


def parse_json(body: bytes) -> Any:
    """A JSON body as Python objects, or MalformedJSON saying where it is not JSON."""
    return _parse_json(body)


#: The HTTP error of each of aeserve/artifact/rows.py's codes.
_ROW_ERRORS: dict[str, type[ServiceError]] = {cls.code: cls for cls in (
    InvalidInstances, EmptyInstances, TooManyRows, FeatureMismatch, NonNumeric, NonFinite,
    RaggedRows, WrongWidth)}


def http_error(error: row_checks.RowError) -> ServiceError:
    """The typed HTTP error (status, code, message, details) of a problem with the rows."""
    return _ROW_ERRORS[error.code](error.message, **error.detail)


def _http_errors(check: Callable[P, R]) -> Callable[P, R]:
    """`check`, one of aeserve/artifact/rows.py's, raising the HTTP error of its RowError's code
    (`http_error`) instead."""
    @functools.wraps(check)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return check(*args, **kwargs)
        except row_checks.RowError as error:
            raise http_error(error) from None

    return checked


#: JSON rows (lists in feature order, or objects keyed by feature name) as a float32 matrix;
#: finiteness is checked by `check_rows`.
decode_rows = _http_errors(row_checks.decode_rows)
#: At most `max_rows` rows, every value a finite float32.
check_rows = _http_errors(row_checks.check_rows)
#: No ragged rows, and no rows of another width than the model's: both decoders' rule.
check_row_lengths = _http_errors(row_checks.check_row_lengths)


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # Python's parser also takes NaN, Infinity and overflowing literals such as 1e400; if it
        # succeeds, the finiteness check names the offending cell instead of a vague syntax error.
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise MalformedJSON(f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise MalformedJSON("the body's JSON is nested too deeply") from None


def _decode_float32_rows(body: bytes, width: int) -> np.ndarray:
    row_bytes = 4 * width
    if len(body) == 0:
        raise EmptyInstances("the body is empty: send at least one row")
    if len(body) % row_bytes:
        raise WrongWidth(f"{len(body)} bytes is not a whole number of rows of {width} float32 "
                         f"values ({row_bytes} bytes each)", expected=width)
    return np.frombuffer(body, dtype="<f4").reshape(-1, width)


#: Every .npy file starts with these bytes. Anything else never reaches `np.load`, which would
#: open a zip archive (an .npz) and fail on a broken one with errors of its own.
NPY_MAGIC = b"\x93NUMPY"


def _decode_npy(body: bytes, width: int) -> np.ndarray:
    if not body.startswith(NPY_MAGIC):
        what = "an .npz archive" if body.startswith(b"PK") else "not an .npy array"
        raise MalformedJSON(f"the body is {what}; send one array in .npy format")
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError, MemoryError) as exc:
        raise MalformedJSON(f"the body is not a valid .npy array: {exc}") from None
    if array.dtype.kind not in "iuf":
        raise NonNumeric(f".npy array has dtype {array.dtype}; send a numeric array")
    if array.ndim != 2:
        raise InvalidInstances(f".npy array must be 2-D [rows, {width}], got shape {array.shape}")
    if array.shape[1] != width:
        raise WrongWidth(f"rows have {array.shape[1]} values but the model expects {width}",
                         expected=width, received=int(array.shape[1]))
    if array.shape[0] == 0:
        raise EmptyInstances("the array has no rows")
    return np.ascontiguousarray(array, dtype=np.float32)


def dumps(payload: dict[str, Any]) -> bytes:
    """JSON bytes; numpy arrays serialize natively, with no per-element Python objects."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
