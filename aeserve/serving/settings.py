"""Service settings, read from `AESERVE_*` environment variables (pydantic-settings)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from aeserve.artifact.session import SessionConfig


class Settings(BaseSettings):
    """Every setting of the server; its variable is `AESERVE_` + the upper-cased field name."""

    model_config = SettingsConfigDict(env_prefix="AESERVE_", extra="ignore")

    models_dir: Path = Field(Path("models"), description="The model repository.")
    default_model: str | None = Field(
        None, description="Model behind the un-prefixed routes; default: the first name in order.")
    provider: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when onnxruntime-gpu sees a GPU, else CPU.")
    workers: int = Field(1, ge=1, description="Server processes (uvicorn workers).")
    intra_op_threads: int = Field(
        0, ge=0, description="onnxruntime threads per session run; 0 = cores // workers - 1 (at "
                             "least 1): each worker keeps a core for its event loop, so workers "
                             "x (threads + 1) never exceeds the cores.")
    inter_op_threads: int = Field(1, ge=1, description="onnxruntime inter-op threads.")
    ort_spinning: bool = Field(
        False, description="Let onnxruntime's idle threads spin: lower latency on dedicated "
                           "cores, stolen CPU on shared ones.")
    gil_switch_interval_ms: float = Field(
        0.2, gt=0, description="Python's thread switch interval (default 5 ms): a finished "
                               "onnxruntime run waits at most this long to hand its result back "
                               "to a busy event loop.")
    batch_max_rows: int = Field(1024, ge=1, description="Most rows merged into one run.")
    batch_max_delay_ms: float = Field(
        2.0, ge=0, description="Longest a request waits for neighbours while a run is busy.")
    decode_process_min_bytes: int = Field(
        1024 * 1024, ge=0, description="JSON bodies at least this large are parsed in a helper "
                                       "process (simdjson holds the GIL while it parses); 0 = "
                                       "never.")
    max_rows: int = Field(100_000, gt=0, description="Most rows accepted in one request.")
    drift_window_rows: int = Field(
        10_000, ge=0, description="Rows in each version's drift window (GET /models/{name}/"
                                  "drift); 0 = no drift monitoring.")
    drift_sample_rows: int = Field(
        64, ge=1, description="Most rows of one batch that enter the drift window (evenly "
                               "spaced): a large batch costs no more than this many.")
    prediction_log: Path | None = Field(
        None, description="Folder of the prediction log: every scored row's id, time, "
                          "model, version, score, threshold and verdict, in Parquet files "
                          "written off the request path; feedback labels join it (POST "
                          "/models/{name}/feedback). Unset = no log.")
    prediction_log_features: bool = Field(
        False, description="Also log each row's features (larger files).")
    prediction_log_max_bytes: int = Field(
        1024 ** 3, gt=0, description="Most bytes the prediction files hold: the oldest go "
                                     "first (labels have a budget of their own).")
    prediction_log_max_label_bytes: int = Field(
        128 * 1024 ** 2, gt=0, description="Most bytes the feedback label files hold: the "
                                           "oldest go first.")
    prediction_log_search_bytes: int = Field(
        256 * 1024 ** 2, gt=0, description="Most bytes of the newest prediction files one "
                                           "feedback call reads to find its ids; a label "
                                           "whose prediction is older is stored unmatched.")
    prediction_log_flush_s: float = Field(
        5.0, gt=0, description="Seconds between writes of the rows waiting for the log (one "
                               "file per write).")
    prediction_log_max_pending_rows: int = Field(
        1_000_000, gt=0, description="Most rows waiting for the log's writer; beyond it rows "
                                     "are not logged and are counted as dropped.")
    prediction_log_max_pending_bytes: int = Field(
        256 * 1024 ** 2, gt=0, description="Most bytes the rows waiting for the log's writer "
                                           "hold (scores, ids, logged features); beyond it rows "
                                           "are not logged and are counted as dropped.")
    stream_max_series: int = Field(
        100_000, ge=1, description="Most series whose last readings and alarm state POST "
                                   "/models/{name}/stream keeps per model; beyond it the least "
                                   "recently seen is dropped.")
    stream_max_series_per_request: int = Field(
        10_000, ge=1, description="Most series one POST /models/{name}/stream request may "
                                  "hold; beyond it 413 too_many_series, before its readings "
                                  "are read.")
    stream_idle_s: float = Field(
        3600.0, gt=0, description="A series unseen for this many seconds is dropped (its next "
                                  "reading starts a new window and a new alarm).")
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0, description="Largest request body.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = Field(
        "json", description="json: one JSON object per line, with the request id.")
    poll_interval_s: float = Field(
        10.0, ge=0, description="Seconds between scans of the repository for new versions; 0 = "
                                "scan only at start-up and on POST /admin/reload.")
    api_key: SecretStr | None = Field(
        None, description="When set, every route but health needs it (Authorization: Bearer or "
                          "X-API-Key); admin and repository routes refuse to run without it.")
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (JSON list); none = CORS off.")
    drain_seconds: float = Field(
        0.0, ge=0, description="On SIGTERM, answer /readyz with 503 for this long before closing "
                               "the listener; in-flight requests always finish.")
    header_timeout_s: float = Field(
        10.0, gt=0, description="A request's line and headers must arrive within this many "
                                "seconds of the connection opening or of the request's first "
                                "byte; a slower client gets 408 and its connection is closed.")
    body_timeout_s: float = Field(
        30.0, gt=0, description="A request body must arrive within this many seconds of its "
                                "headers; a slower upload gets 408 and its connection is closed.")
    max_concurrency: int = Field(
        512, ge=1, description="Most requests a worker has in progress at once (their heads "
                               "complete); beyond it, new requests get 503 `overloaded` at once. "
                               "Connections still sending their heads do not count: a flood of "
                               "slow clients cannot refuse prompt ones.")
    max_connections: int = Field(
        4096, ge=1, description="Most open connections a worker keeps, idle and slow ones "
                                "included (uvicorn's limit_concurrency): beyond it new requests "
                                "get uvicorn's plain 503. Keeps a flood of sockets from using "
                                "up file descriptors; the header deadline bounds how long each "
                                "slow one stays.")


def intra_op_threads(settings: Settings) -> int:
    """Threads per onnxruntime run: the setting, or this worker's share of the cores less one.

    The one is for the worker's event loop, which reads the next bodies while a run is under way:
    on 2 cores, runs on both cores made 4,096-row requests 10-20% slower (bench/serving.py
    cases, A/B against one thread), and one-row requests no faster.
    """
    if settings.intra_op_threads > 0:
        return settings.intra_op_threads
    return max(1, (os.cpu_count() or 1) // settings.workers - 1)


def session_config(settings: Settings) -> SessionConfig:
    """The onnxruntime session of every version this server loads."""
    return SessionConfig(provider=settings.provider, intra_op_threads=intra_op_threads(settings),
                         inter_op_threads=settings.inter_op_threads,
                         spinning=settings.ort_spinning)
