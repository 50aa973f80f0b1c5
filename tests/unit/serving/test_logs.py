"""Log lines stay one line each: what a client sends cannot forge another."""

from __future__ import annotations

import logging

import orjson

from aeserve.serving.logs import JsonFormatter, TextFormatter


def record(path: str) -> logging.LogRecord:
    return logging.LogRecord("aeserve.access", logging.INFO, __file__, 1, "POST %s 404", (path,),
                             None)


def test_text_lines_escape_control_characters():
    forged = "/x\n2026-01-01 00:00:00,000 INFO aeserve.access: POST /admin/reload 200\r\x00"
    line = TextFormatter("%(levelname)s %(message)s").format(record(forged))
    assert "\n" not in line and "\r" not in line and "\x00" not in line
    assert line == ("INFO POST /x\\n2026-01-01 00:00:00,000 INFO aeserve.access: "
                    "POST /admin/reload 200\\r\\x00 404")


def test_json_lines_were_never_forgeable():
    line = JsonFormatter().format(record("/x\nforged"))
    assert "\n" not in line and orjson.loads(line)["message"] == "POST /x\nforged 404"
