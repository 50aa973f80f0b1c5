"""The stream runner's broker addresses and socket options."""

import socket

import pytest

from aeserve.batch.mqtt_link import BrokerTopic, no_delay


def test_a_broker_topic_is_read_from_its_url():
    assert BrokerTopic.parse("mqtt://broker:1884/plant/+/readings", wildcards=True) == \
        BrokerTopic("broker", 1884, "plant/+/readings")
    assert BrokerTopic.parse("mqtt://broker/scores", wildcards=False).port == 1883


@pytest.mark.parametrize(("url", "words"), [
    ("kafka://broker:9092/readings", "speaks mqtt://"),
    ("mqtt://broker:1883/", "give a host and a topic"),
    ("mqtt://broker:port/x", "not a number"),
    ("mqtt://broker:1883/scores/#", "wildcards"),
])
def test_bad_urls_are_refused_with_the_reason(url, words):
    with pytest.raises(ValueError, match=words):
        BrokerTopic.parse(url, wildcards=False)


def test_the_runner_sends_small_messages_without_delay():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        no_delay(None, None, sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_a_source_topic_keeps_its_multi_level_wildcard():
    assert BrokerTopic.parse("mqtt://b:1883/plant/#", wildcards=True).topic == "plant/#"
