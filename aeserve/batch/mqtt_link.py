"""An MQTT source and sink for the stream runner, on paho-mqtt.

At least once: the source is subscribed with QoS 1 and its messages are acknowledged by hand
(`ack`), only after every answer to them has been acknowledged by the sink's broker (QoS 1
publishes, `wait_published`). A runner that stops between the two gets the messages again:
an answer can then be written twice, never not at all.

Broker restarts: the client reconnects by itself (a growing delay, at most 30 s), subscribes
again on every connection, and keeps unacknowledged publishes to send again. Its session is not
clean (a fixed client id): a broker that keeps sessions (Mosquitto with persistence) holds the
QoS 1 messages that arrive while the runner is away.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger("aeserve.stream")

#: Messages received and not yet taken by the runner: beyond it, the network thread waits, and
#: the broker holds the rest (back-pressure instead of unbounded memory).
INBOX_MESSAGES = 10_000


@dataclass(frozen=True)
class BrokerTopic:
    """`mqtt://host:port/topic`, the topic may hold '/' (and '+', '#' for a source)."""

    host: str
    port: int
    topic: str

    @classmethod
    def parse(cls, url: str, *, wildcards: bool) -> BrokerTopic:
        parts = urlsplit(url)
        if parts.scheme != "mqtt":
            raise ValueError(f"{url}: the stream runner speaks mqtt://host:port/topic")
        # the topic is everything after the address: '#' is a wildcard, not a URL fragment
        topic = url.split("://", 1)[1].partition("/")[2]
        if not parts.hostname or not topic:
            raise ValueError(f"{url}: give a host and a topic, mqtt://host:port/topic")
        if not wildcards and any(c in topic for c in "+#"):
            raise ValueError(f"{url}: a sink topic cannot hold the wildcards + or #")
        try:
            port = parts.port or 1883
        except ValueError:
            raise ValueError(f"{url}: the port is not a number") from None
        return cls(parts.hostname, port, topic)


def no_delay(client, userdata, sock) -> None:
    """Send each small message at once: with Nagle's algorithm a lone answer waits for the
    broker's delayed acknowledgement, tens of milliseconds."""
    if hasattr(sock, "setsockopt"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True)
class Received:
    payload: bytes
    mid: int
    qos: int
    received_at: float


class MqttLink:
    """One connection to a broker: the source's messages in (`take`), answers out (`publish`),
    acknowledgements after the answers are safe (`ack`)."""

    def __init__(self, broker: BrokerTopic, client_id: str, subscribe: str | None) -> None:
        import paho.mqtt.client as mqtt

        self.broker = broker
        self.subscription = subscribe
        self.inbox: queue.Queue[Received] = queue.Queue(maxsize=INBOX_MESSAGES)
        self.connected = threading.Event()
        self.connections = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False, protocol=mqtt.MQTTv311,
                                  manual_ack=subscribe is not None)
        self.client.max_queued_messages_set(0)  # keep every unacknowledged publish
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_socket_open = no_delay
        self.client.connect_async(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker %s:%s refused the connection: %s", self.broker.host,
                        self.broker.port, reason_code)
            return
        self.connections += 1
        if self.subscription is not None:
            client.subscribe(self.subscription, qos=1)
        log.info("connected to %s:%s%s", self.broker.host, self.broker.port,
                 f", subscribed to {self.subscription}" if self.subscription else "")
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        log.warning("lost the broker %s:%s (%s); reconnecting", self.broker.host,
                    self.broker.port, reason_code)

    def _on_message(self, client, userdata, message) -> None:
        self.inbox.put(Received(bytes(message.payload), message.mid, message.qos,
                                time.monotonic()))

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def take(self, most: int, wait_s: float) -> list[Received]:
        """Up to `most` messages: waits up to `wait_s` for the first, then takes what is there."""
        try:
            first = self.inbox.get(timeout=wait_s)
        except queue.Empty:
            return []
        taken = [first]
        while len(taken) < most:
            try:
                taken.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        return taken

    def publish(self, topic: str, payload: bytes):
        """Send an answer with QoS 1; returns what `wait_published` waits on. Kept and sent
        again across reconnections."""
        return self.client.publish(topic, payload, qos=1)

    def wait_published(self, infos: list, stopping: threading.Event) -> bool:
        """Wait until the broker acknowledged every publish in `infos` (through reconnections);
        False when stopped first."""
        for info in infos:
            while not info.is_published():
                if stopping.is_set():
                    return False
                try:
                    info.wait_for_publish(timeout=0.5)
                except (RuntimeError, ValueError):  # not queued yet while disconnected
                    time.sleep(0.1)
        return True

    def ack(self, message: Received) -> None:
        if message.qos > 0:
            self.client.ack(message.mid, message.qos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
