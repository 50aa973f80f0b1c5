"""`aeserve stream --model DIR --source mqtt://host:port/topic --sink mqtt://host:port/topic`.

Consumes messages of readings (aeserve/batch/stream_scorer.py says their shape), keeps each
series' window and alarm in this process (no HTTP hop), and writes one answer per message to the
sink; refused messages are answered there too, or on `--errors` when given. Messages waiting
together are scored in one run (at most `--max-batch`). Delivery is at least once
(aeserve/batch/mqtt_link.py): a message is acknowledged only after its answer is safe with the
broker. Progress is logged every `--progress-s` seconds, and `--metrics-port` serves Prometheus
metrics (messages, readings, alarm starts and ends, series kept, time from receipt to answer).
SIGTERM or SIGINT stop it after the messages in hand; those whose answers the broker has not
acknowledged yet are left unacknowledged, and come again.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aeserve.artifact.alarms import AlarmPolicy
from aeserve.artifact.streams import StoreCounts
from aeserve.batch.model import ScoringError, load_model
from aeserve.batch.mqtt_link import BrokerTopic, MqttLink
from aeserve.batch.stream_scorer import StreamScorer

log = logging.getLogger("aeserve.stream")


@dataclass(frozen=True)
class RunnerOptions:
    source: BrokerTopic
    sink: BrokerTopic
    errors: BrokerTopic | None
    max_batch: int
    max_messages: int | None
    progress_s: float
    client_id: str


class RunnerMetrics:
    """The runner's Prometheus metrics, in a registry of its own."""

    def __init__(self, model: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry()
        self.model = model
        self.messages = Counter("aeserve_stream_messages", "Messages answered, by outcome: "
                                "scored, refused.", ["model", "outcome"], registry=registry)
        self.readings = Counter("aeserve_stream_readings", "Readings in scored messages.",
                                ["model"], registry=registry)
        self.alarm_events = Counter("aeserve_alarm_events", "Alarm starts and ends of the "
                                    "series, by event.", ["model", "event"], registry=registry)
        self.dropped = Counter("aeserve_stream_dropped_series", "Series whose state was "
                               "dropped, by reason: evicted (beyond --max-series), expired "
                               "(idle), overflow (windows whose scores overflowed float32).",
                               ["model", "reason"], registry=registry)
        self.series = Gauge("aeserve_stream_series", "Series whose state is kept.", ["model"],
                            registry=registry)
        self.in_alarm = Gauge("aeserve_stream_series_in_alarm", "Series in alarm now.",
                              ["model"], registry=registry)
        self.latency = Histogram("aeserve_stream_message_seconds", "From a message's receipt "
                                 "to its answer's acknowledgement by the broker.", ["model"],
                                 registry=registry)


def run(model_dir: Path, options: RunnerOptions, policy: AlarmPolicy, *, max_series: int,
        idle_s: float, metrics_port: int | None, stopping: threading.Event) -> int:
    """Run until stopped (or `max_messages` answered); returns the process's exit status."""
    model = load_model(model_dir)
    scorer = StreamScorer(model, policy, max_series=max_series, idle_s=idle_s)
    metrics = RunnerMetrics(scorer.name)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, registry=metrics.registry)
    source = MqttLink(options.source, options.client_id, subscribe=options.source.topic)
    same_broker = (options.sink.host, options.sink.port) == (options.source.host,
                                                            options.source.port)
    sink = source if same_broker else MqttLink(options.sink, options.client_id + "-sink", None)
    log.info("model %s version %s (window %d, features %s) from %s:%s/%s to %s:%s/%s",
             scorer.name, scorer.version, scorer.size, scorer.features, options.source.host,
             options.source.port, options.source.topic, options.sink.host, options.sink.port,
             options.sink.topic)
    answered = 0
    counted = StoreCounts()  # the store's counts already in the metrics
    last_report, reported = time.monotonic(), 0
    try:
        while not stopping.is_set():
            if options.max_messages is not None and answered >= options.max_messages:
                break
            taken = source.take(options.max_batch, wait_s=0.2)
            if taken:
                answers = scorer.score([m.payload for m in taken])
                infos = []
                for answer in answers:
                    refused = "error" in answer
                    topic = (options.errors if refused and options.errors else options.sink).topic
                    infos.append(sink.publish(topic, json.dumps(answer).encode()))
                    metrics.messages.labels(scorer.name, "refused" if refused else "scored").inc()
                    if not refused:
                        metrics.readings.labels(scorer.name).inc(len(answer["scores"]))
                if not sink.wait_published(infos, stopping):
                    break  # stopped before the answers were safe: the messages are not acked
                done = time.monotonic()
                for message in taken:
                    source.ack(message)
                    metrics.latency.labels(scorer.name).observe(done - message.received_at)
                answered += len(taken)
                for kind, label, n in counted.advance(scorer.store.counts):
                    counter = metrics.alarm_events if kind == "event" else metrics.dropped
                    counter.labels(scorer.name, label).inc(n)
                metrics.series.labels(scorer.name).set(len(scorer.store))
                metrics.in_alarm.labels(scorer.name).set(scorer.store.active_alarms)
            now = time.monotonic()
            if now - last_report >= options.progress_s:
                rate = (answered - reported) / (now - last_report)
                log.info("%d messages answered (%.0f/s), %d series kept, %d in alarm", answered,
                         rate, len(scorer.store), scorer.store.active_alarms)
                last_report, reported = now, answered
    finally:
        if sink is not source:
            sink.close()
        source.close()
    log.info("stopped after %d messages", answered)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path,
                        help="models/NAME (its newest version that loads) or models/NAME/VERSION")
    parser.add_argument("--source", required=True,
                        help="mqtt://host:port/topic to read readings from (+ and # allowed)")
    parser.add_argument("--sink", required=True, help="mqtt://host:port/topic for the answers")
    parser.add_argument("--errors", default=None,
                        help="mqtt://host:port/topic for refused messages' answers (default: "
                             "the sink's topic); on the sink's broker")
    parser.add_argument("--alarm", default=None,
                        help='the alarm policy as JSON, e.g. \'{"k": 2, "n": 4}\' (default: the '
                             "model's config.json \"alarm\", else the defaults of "
                             "docs/streams.md)")
    parser.add_argument("--max-series", type=int, default=100_000,
                        help="most series kept; the least recently seen is dropped beyond it "
                             "(default: %(default)s)")
    parser.add_argument("--idle-s", type=float, default=3600.0,
                        help="drop a series unseen this long (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=256,
                        help="most waiting messages scored in one run (default: %(default)s)")
    parser.add_argument("--max-messages", type=int, default=None,
                        help="stop after answering this many messages (default: run until "
                             "SIGTERM or SIGINT)")
    parser.add_argument("--client-id", default="aeserve-stream",
                        help="MQTT client id: a runner restarted under the same id finds the "
                             "messages its broker kept for it (default: %(default)s)")
    parser.add_argument("--progress-s", type=float, default=10.0,
                        help="seconds between progress lines (default: %(default)s)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics on this port (default: none)")


def alarm_policy(model_dir: Path, given: str | None) -> AlarmPolicy:
    """`--alarm`, else the model's config.json "alarm" (where the server reads it), else the
    defaults."""
    if given is not None:
        return AlarmPolicy.model_validate_json(given)
    for folder in (model_dir, model_dir.parent):
        config = folder / "config.json"
        if config.is_file():
            alarm = json.loads(config.read_text()).get("alarm")
            return AlarmPolicy.model_validate(alarm) if alarm is not None else AlarmPolicy()
    return AlarmPolicy()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aeserve stream", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    try:
        source = BrokerTopic.parse(args.source, wildcards=True)
        sink = BrokerTopic.parse(args.sink, wildcards=False)
        errors = BrokerTopic.parse(args.errors, wildcards=False) if args.errors else None
        if errors is not None and (errors.host, errors.port) != (sink.host, sink.port):
            raise ValueError("--errors must be on the sink's broker")
        if args.max_batch < 1 or args.max_series < 1 or args.idle_s <= 0:
            raise ValueError("--max-batch and --max-series must be positive, --idle-s above 0")
        policy = alarm_policy(args.model, args.alarm)
        options = RunnerOptions(source, sink, errors, args.max_batch, args.max_messages,
                                args.progress_s, args.client_id)
        stopping = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.set())
        return run(args.model, options, policy, max_series=args.max_series, idle_s=args.idle_s,
                   metrics_port=args.metrics_port, stopping=stopping)
    except (ValueError, ScoringError) as exc:
        print(f"aeserve stream: error: {exc}", file=sys.stderr)
        return 2
