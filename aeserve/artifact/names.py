"""What may name a row or a series: text that every file, log and broker can hold.

A JSON string may carry a lone UTF-16 surrogate (`"\\ud800"`): valid JSON, a Python `str`, but
no UTF-8 encoding exists for it, so Parquet, MQTT and HTTP headers all refuse it later, far from
the request that sent it. Every reader of ids and series names asks this one question first.
"""

from __future__ import annotations


def encodes_as_utf8(value: str | int) -> bool:
    """Whether `value` (an id or a series name) has a UTF-8 encoding: integers always, text
    unless it holds a lone surrogate."""
    if not isinstance(value, str) or value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
