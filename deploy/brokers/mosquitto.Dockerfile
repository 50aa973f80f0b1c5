# Mosquitto for `docker compose --profile streams` (deploy/docker-compose.yml): Debian's package on
# the project's base image, listening on every interface, queueing (not dropping) a slow
# subscriber's QoS 1 messages, sending small messages without delay, and keeping sessions across
# restarts: the settings deploy/brokers/broker.sh gives the tests' broker.
FROM python:3.11-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto \
 && rm -rf /var/lib/apt/lists/* \
 && printf '%s\n' 'listener 1883 0.0.0.0' 'allow_anonymous true' \
      'max_queued_messages 1000000' 'max_inflight_messages 1000' 'set_tcp_nodelay true' \
      'persistence true' 'persistence_location /var/lib/mosquitto/' \
      > /etc/mosquitto/aeserve.conf \
 && mkdir -p /var/lib/mosquitto && chown mosquitto /var/lib/mosquitto
USER mosquitto
EXPOSE 1883
CMD ["mosquitto", "-c", "/etc/mosquitto/aeserve.conf"]
