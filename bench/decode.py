"""Request decoding: the service's codec against what a straightforward service does.

One process, one body (4,096 rows x 64 features as `{"instances": [[...]]}`), medians of repeated
runs. Baselines: `json.loads` + pydantic `list[list[float]]` + `np.asarray` (FastAPI's default
path), and `orjson.loads` + `np.asarray`. Writes bench/results/decode.md.

    python bench/decode.py [--rows 4096] [--width 64] [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
from pydantic import BaseModel

from aeserve.serving.codecs import decode_instances, dumps


class Instances(BaseModel):
    instances: list[list[float]]


def pydantic_decode(body: bytes) -> np.ndarray:
    return np.asarray(Instances.model_validate(json.loads(body)).instances, dtype=np.float32)


def orjson_decode(body: bytes) -> np.ndarray:
    return np.asarray(orjson.loads(body)["instances"], dtype=np.float32)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "decode.md")
    args = parser.parse_args()

    X = np.random.default_rng(0).normal(size=(args.rows, args.width)).astype(np.float32)
    body = orjson.dumps({"instances": X.tolist()})
    names = [f"f{i}" for i in range(args.width)]
    ours = decode_instances(body, "application/json", names, args.rows)
    assert np.array_equal(ours, X) and np.array_equal(pydantic_decode(body), X)

    decoders = {
        "json + pydantic list[list[float]] + np.asarray": lambda: pydantic_decode(body),
        "orjson + np.asarray": lambda: orjson_decode(body),
        "aeserve codec (simdjson as_buffer)": lambda: decode_instances(
            body, "application/json", names, args.rows),
        "aeserve codec, float32 binary body": lambda: decode_instances(
            X.tobytes(), "application/octet-stream", names, args.rows),
    }
    scores = np.random.default_rng(1).random(args.rows).astype(np.float32)
    encoders = {
        "json.dumps(list)": lambda: json.dumps({"scores": scores.tolist()}).encode(),
        "aeserve dumps (orjson, numpy)": lambda: dumps({"scores": scores}),
    }
    results = {name: median_ms(fn, args.repeats) for name, fn in decoders.items()}
    encoded = {name: median_ms(fn, args.repeats) for name, fn in encoders.items()}

    baseline = results["json + pydantic list[list[float]] + np.asarray"]
    lines = [
        "# Request decoding",
        "",
        f"Body: {args.rows} x {args.width} `{{\"instances\": [[...]]}}`, {len(body) / 1e6:.1f} MB. "
        f"Median of {args.repeats} runs in one process; {os.cpu_count()} cores, "
        f"{platform.machine()}, Python {platform.python_version()}.",
        "Reproduce: `make bench` (or `python bench/decode.py`).",
        "",
        "| decoder | median ms | speed-up vs pydantic |",
        "|---|---:|---:|",
        *[f"| {name} | {ms:.2f} | {baseline / ms:.1f}x |" for name, ms in results.items()],
        "",
        f"| encoding {args.rows} scores | median ms |",
        "|---|---:|",
        *[f"| {name} | {ms:.3f} |" for name, ms in encoded.items()],
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
