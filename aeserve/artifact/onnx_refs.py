"""The files an ONNX graph refers to: the locations of its external data, read from the protobuf.

Why by hand: a graph may keep its weights in other files ("external data"), which onnxruntime
opens relative to the graph's folder. A hostile graph can point them anywhere (`../../etc/passwd`,
onnxruntime before 1.24.1 followed such paths), and even inside the folder they are not covered by
the card's checksum of model.onnx. The server does not depend on the `onnx` package, so this module
reads the few protobuf fields that can hold a tensor, and skips everything else unread: a graph's
weights (raw bytes) are stepped over, never copied.

Fields (onnx.proto3): ModelProto.graph = 7, .functions = 25; GraphProto.node = 1,
.initializer = 5, .sparse_initializer = 15; NodeProto.attribute = 5; FunctionProto.node = 7;
AttributeProto.t = 5, .g = 6, .tensors = 10, .graphs = 11, .sparse_tensor = 22,
.sparse_tensors = 23; SparseTensorProto.values = 1, .indices = 2; TensorProto.external_data = 13,
.data_location = 14 (1 = EXTERNAL); StringStringEntryProto.key = 1, .value = 2.
"""

from __future__ import annotations

from collections.abc import Iterator

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
EXTERNAL = 1

#: message kind -> {field number: the kind of the message it holds}
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 25: "function"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse",
                  23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
#: Nesting deeper than this is refused rather than followed (subgraphs of subgraphs...).
MAX_DEPTH = 64


class MalformedGraph(ValueError):
    """The bytes are not a protobuf message that can be walked."""


def external_data_locations(data: bytes) -> list[str]:
    """The `location` of every tensor stored as external data, in the order found."""
    view = memoryview(data)
    found: list[str] = []
    _walk(view, 0, len(view), "model", found, 0)
    return found


def _walk(view: memoryview, start: int, end: int, kind: str, found: list[str],
          depth: int) -> None:
    if depth > MAX_DEPTH:
        raise MalformedGraph("the graph nests deeper than any aeserve model does")
    if kind == "tensor":
        location, external = None, False
        for field, wire, value in _fields(view, start, end):
            if field == 14 and wire == _VARINT:
                external = value == EXTERNAL
            elif field == 13 and wire == _LEN:
                key, text = _entry(view, *value)
                if key == "location":
                    location = text
        if external or location is not None:
            found.append(location if location is not None else "")
        return
    children = _CHILDREN[kind]
    for field, wire, value in _fields(view, start, end):
        child = children.get(field)
        if child is not None and wire == _LEN:
            _walk(view, value[0], value[1], child, found, depth + 1)


def _entry(view: memoryview, start: int, end: int) -> tuple[str, str]:
    key = text = ""
    for field, wire, value in _fields(view, start, end):
        if wire == _LEN and field in (1, 2):
            decoded = bytes(view[value[0]:value[1]]).decode("utf-8", "replace")
            key, text = (decoded, text) if field == 1 else (key, decoded)
    return key, text


def _fields(view: memoryview, start: int, end: int) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value): a varint's value, or a length-delimited (start, end)."""
    position = start
    while position < end:
        tag, position = _varint(view, position, end)
        field, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            value, position = _varint(view, position, end)
            yield field, wire, value
        elif wire == _LEN:
            length, position = _varint(view, position, end)
            if position + length > end:
                raise MalformedGraph("a field runs past the end of its message")
            yield field, wire, (position, position + length)
            position += length
        elif wire == _FIXED64:
            position += 8
        elif wire == _FIXED32:
            position += 4
        else:
            raise MalformedGraph(f"unknown protobuf wire type {wire}")
    if position != end:
        raise MalformedGraph("a field runs past the end of its message")


def _varint(view: memoryview, position: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= end or shift > 63:
            raise MalformedGraph("a truncated or oversized varint")
        byte = view[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
