"""The Open Inference Protocol's bodies: a request to its `x` matrix and wanted outputs, and the
outputs back to a response (JSON, or the binary tensor extension).

Tensors travel as `{"name", "shape", "datatype", "data"}` with `data` flattened in row-major order
(nested lists are accepted too). The one input is `x` ([N, d], FP32 or FP64); the outputs are the
graph's: embedding, reconstruction, score, feature_errors (all four unless the request names some),
and on request what a score means, as `/anomaly-score` answers it: `is_anomaly` (BOOL),
`percentile` (FP32) and `p_value` (FP64). A request parameter `threshold` replaces the card's
threshold for that request's verdicts, as `/anomaly-score?threshold=` does; a parameter `ids`
(one string or integer per row) comes back in the response's parameters and names the rows in
the prediction log, as `"ids"` beside `/anomaly-score`'s instances does.

`split_json` is the fast path for large JSON requests (run in the decoder process, see
aeserve/serving/decoder.py): simdjson fills one buffer with the tensor's numbers and only the
small rest of the request becomes Python objects. `decode_request` then gives the same answers,
typed errors included, as for a body parsed in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import simdjson
from pydantic import ValidationError

from aeserve.artifact.card import INPUT_NAME, OUTPUT_NAMES
from aeserve.artifact.errors import schema_problems
from aeserve.serving.codecs import ABSENT, checked_ids, count_brackets, dumps, json_document
from aeserve.serving.errors import (
    InvalidInstances,
    InvalidParameter,
    MalformedJSON,
    NonFinite,
    NonNumeric,
    TooManyRows,
    WrongWidth,
)
from aeserve.serving.schemas.v2 import InferenceRequest

DATATYPES = {"FP32": np.float32, "FP64": np.float64}
BINARY_HEADER = "inference-header-content-length"
#: Outputs the server adds to the graph's (from the score and the card), with their protocol
#: datatype and little-endian wire type.
ANNOTATIONS = {"is_anomaly": ("BOOL", "|b1"), "percentile": ("FP32", "<f4"),
               "p_value": ("FP64", "<f8")}
V2_OUTPUTS = (*OUTPUT_NAMES, *ANNOTATIONS)


@dataclass(frozen=True)
class V2Request:
    """A decoded inference request: the parsed envelope, the input rows, the outputs wanted as
    (name, as binary), and the request's own threshold (None: the card's)."""

    request: InferenceRequest
    rows: np.ndarray
    wanted: list[tuple[str, bool]]
    threshold: float | None = None
    #: the `ids` parameter, one string or integer per row (echoed, and written to the
    #: prediction log), or None
    ids: list[str | int] | None = None

    @property
    def graph_outputs(self) -> list[str]:
        """What the graph must compute: the graph outputs wanted, and the score when an
        annotation is (the server derives those from it)."""
        names = [name for name, _ in self.wanted if name in OUTPUT_NAMES]
        if "score" not in names and any(name in ANNOTATIONS for name, _ in self.wanted):
            names.append("score")
        return names


def decode_request(body: bytes, header_length: str | None, width: int, max_rows: int,
                   presplit: tuple[bytes, np.ndarray] | None = None) -> V2Request:
    """The request in `body`, or a typed error. `presplit` is `split_json`'s result for the
    same body, when the decoder process has computed it."""
    if presplit is not None:
        envelope, values = presplit
        request = _validate(orjson.loads(envelope))
        rows = input_matrix(request, b"", width, max_rows, values)
    else:
        request, binary = parse_inference_request(body, header_length)
        rows = input_matrix(request, binary, width, max_rows)
    return V2Request(request, rows, requested_outputs(request), request_threshold(request),
                     checked_ids((request.parameters or {}).get("ids", ABSENT), len(rows)))


def request_threshold(request: InferenceRequest) -> float | None:
    """The request's `threshold` parameter: a finite number, or a typed 422."""
    value = (request.parameters or {}).get("threshold")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not np.isfinite(float(value)):
        raise InvalidParameter(f"parameter threshold must be a finite number, got {value!r}")
    return float(value)


def split_json(body: bytes) -> tuple[bytes, np.ndarray] | None:
    """(the request without its tensor's data, as JSON; the data as float32) for a clean JSON
    request whose one input holds a flat list of numbers; None for anything else, which is then
    parsed in full (and refused there by name if it is wrong).

    A flat list is told from a nested one by its brackets: the body holds exactly one '[' more
    than the rest of the request re-serialised.
    """
    try:
        with json_document(body) as document:
            if not isinstance(document, simdjson.Object):
                return None
            inputs = document["inputs"]
            if not isinstance(inputs, simdjson.Array) or len(inputs) != 1:
                return None
            tensor = inputs[0]
            if not isinstance(tensor, simdjson.Object):
                return None
            data = tensor["data"]
            if not isinstance(data, simdjson.Array):
                return None
            flat = np.frombuffer(data.as_buffer(of_type="d"), dtype=np.float64)
            if flat.size != len(data):
                return None
            envelope: dict[str, Any] = {key: _plain(document[key]) for key in document
                                        if key != "inputs"}
            envelope["inputs"] = [{key: _plain(tensor[key]) for key in tensor
                                   if key != "data"}]
    except (KeyError, TypeError, ValueError, RuntimeError):
        return None
    finally:
        document = inputs = tensor = data = None
    encoded = orjson.dumps(envelope)
    if count_brackets(body) != count_brackets(encoded) + 1:
        return None
    with np.errstate(over="ignore"):  # beyond float32: inf, refused by name in input_matrix
        return encoded, flat.astype(np.float32)


def _plain(value: Any) -> Any:
    """A simdjson value as plain Python (small values only: the envelope, never the data)."""
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def parse_inference_request(body: bytes, header_length: str | None
                            ) -> tuple[InferenceRequest, bytes]:
    """The JSON request and, with the binary tensor extension, the bytes that follow it."""
    binary = b""
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()) \
                or int(header_length) > len(body):
            raise MalformedJSON(f"Inference-Header-Content-Length {header_length!r} does not "
                                f"fit a body of {len(body)} bytes")
        body, binary = body[:int(header_length)], body[int(header_length):]
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"the body is not valid JSON: {exc}") from None
    return _validate(payload), binary


def _validate(payload: Any) -> InferenceRequest:
    try:
        return InferenceRequest.model_validate(payload)
    except ValidationError as exc:
        raise InvalidInstances("not an inference request: "
                               f"{schema_problems(exc.errors(), limit=3)}") from None


def input_matrix(request: InferenceRequest, binary: bytes, width: int, max_rows: int,
                 decoded: np.ndarray | None = None) -> np.ndarray:
    """The request's `x` tensor as C-contiguous float32 [N, width], or a typed error.

    `decoded`: the tensor's numbers, already read from the body by `split_json`.
    """
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT_NAME:
        names = [i.name for i in request.inputs]
        raise InvalidInstances(f"the model takes one input named {INPUT_NAME!r}, got {names}")
    tensor = request.inputs[0]
    dtype = DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise NonNumeric(f"datatype {tensor.datatype!r} is not supported; send FP32 or FP64")
    if len(tensor.shape) != 2 or tensor.shape[1] != width:
        raise WrongWidth(f"input shape {tensor.shape} does not match [N, {width}]",
                         expected=width)
    if tensor.shape[0] > max_rows:
        raise TooManyRows(f"{tensor.shape[0]} rows exceed the limit of {max_rows}")
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if size != len(binary) or size != tensor.shape[0] * width * np.dtype(dtype).itemsize:
            raise InvalidInstances(
                f"binary_data_size {size} does not match the {len(binary)} bytes sent or the "
                f"shape {tensor.shape} in {tensor.datatype}")
        values = np.frombuffer(binary, dtype=np.dtype(dtype).newbyteorder("<"))
    elif decoded is not None:
        values = decoded
    else:
        try:
            values = np.asarray(tensor.data)  # numpy reads the list once, in C
        except (TypeError, ValueError):
            raise NonNumeric("input data must be numbers, flat or nested in the given "
                             "shape") from None
        if values.dtype.kind == "O":  # integers beyond int64 (rare): each read by Python
            values = _big_integers(values)
        # numpy would cast "1.5" or true to a float: the protocol's FP32 holds numbers only
        if values.dtype.kind not in "iuf" and values.size:
            raise NonNumeric(f"input data must be numbers for {tensor.datatype}, got "
                             f"{_kind_name(values)}")
        with np.errstate(over="ignore"):  # beyond float32: inf, refused by name below
            values = values.astype(dtype)
    if values.size != tensor.shape[0] * width or tensor.shape[0] == 0:
        raise InvalidInstances(f"input data has {values.size} values; shape {tensor.shape} "
                               f"needs {tensor.shape[0] * width} (and at least one row)")
    with np.errstate(over="ignore"):
        rows = np.ascontiguousarray(values.reshape(tensor.shape), dtype=np.float32)
    if not np.isfinite(rows).all():
        raise NonFinite("input data holds NaN, infinity, or values beyond float32's range")
    return rows


def _big_integers(values: np.ndarray) -> np.ndarray:
    """An object array of Python numbers as float64 (beyond float64: inf), or as it was when
    it holds anything else (then refused by its kind)."""
    flat = values.ravel()
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        return values
    as_float = np.empty(len(flat), dtype=np.float64)
    for i, value in enumerate(flat):
        try:
            as_float[i] = float(value)
        except OverflowError:
            as_float[i] = np.inf
    return as_float.reshape(values.shape)


def _kind_name(values: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "S": "strings", "O": "mixed values"}.get(
        values.dtype.kind, f"dtype {values.dtype}")


def requested_outputs(request: InferenceRequest) -> list[tuple[str, bool]]:
    """(name, as binary) for each output the client wants; all four, in JSON, by default."""
    binary_default = bool((request.parameters or {}).get("binary_data_output", False))
    if not request.outputs:
        return [(name, binary_default) for name in OUTPUT_NAMES]
    unknown = [o.name for o in request.outputs if o.name not in V2_OUTPUTS]
    if unknown:
        raise InvalidInstances(f"unknown outputs {unknown}; choose from {list(V2_OUTPUTS)}")
    return [(o.name, bool((o.parameters or {}).get("binary_data", binary_default)))
            for o in request.outputs]


def encode_response(name: str, version: int, threshold: float, decoded: V2Request,
                    results: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str], str]:
    """JSON, or the binary extension's JSON header followed by raw little-endian tensors.

    `threshold` is the one in force (the request's own, or the card's), and `results` hold the
    verdicts at it."""
    parameters: dict[str, Any] = {"threshold": threshold}
    if decoded.ids is not None:
        parameters["ids"] = decoded.ids
    if any(output == "score" or output in ANNOTATIONS for output, _ in decoded.wanted):
        parameters["anomalies"] = int(np.count_nonzero(results["is_anomaly"]))
    outputs, blobs = [], []
    for output, as_binary in decoded.wanted:
        datatype, wire = ANNOTATIONS.get(output, ("FP32", "<f4"))
        tensor = np.ascontiguousarray(results[output], dtype=wire)
        entry: dict[str, Any] = {"name": output, "datatype": datatype,
                                 "shape": list(tensor.shape)}
        if as_binary:
            blob = tensor.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensor.ravel()
        outputs.append(entry)
    response: dict[str, Any] = {"model_name": name, "model_version": str(version),
                                "outputs": outputs, "parameters": parameters}
    if decoded.request.id is not None:
        response["id"] = decoded.request.id
    header = dumps(response)
    if not blobs:
        return header, {}, "application/json"
    return (header + b"".join(blobs), {"Inference-Header-Content-Length": str(len(header))},
            "application/octet-stream")
