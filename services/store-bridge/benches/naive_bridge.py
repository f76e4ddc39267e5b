#!/usr/bin/env python3
"""The naive peer of the store bridge bench: what a team would write in an afternoon.

paho-mqtt subscribes with a persistent MQTT v5 session and manual acks; each message goes to Kafka
as it came (raw JSON, key = the store id from the topic, no headers) with confluent-kafka, and its
PUBACK is sent when Kafka acknowledged the record (ack after delivery, like the bridge; no outbox,
no validation, no Avro, no dead letters). The bench (`pipeline.rs`) creates the session and queues
the backlog first; this drains `--count` messages and prints one JSON line with its rate, measured
like the bridge's: from the first message received to the last delivery.
"""

import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from confluent_kafka import Producer


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mqtt-port", type=int, required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--receive-maximum", type=int, default=10000)
    ap.add_argument("--timeout", type=float, default=900.0)
    a = ap.parse_args()

    producer = Producer(
        {
            "bootstrap.servers": a.brokers,
            "acks": "all",
            "linger.ms": 5,
            # Like the bridge on tansu (`kafka.idempotence = false` there): tansu 0.6 cannot keep
            # idempotent producers across a restart.
            "enable.idempotence": False,
        }
    )
    lock = threading.Lock()
    state = {"delivered": 0, "first": None, "last": None, "failed": 0}

    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=a.client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=True,
    )
    client.username_pw_set(a.user, a.password)

    def delivered(err, _msg, mid, qos):
        if err is not None:
            with lock:
                state["failed"] += 1
            return  # not acked: mosquitto redelivers it on the next session
        client.ack(mid, qos)
        with lock:
            state["delivered"] += 1
            state["last"] = time.monotonic()

    def on_message(_c, _u, msg):
        with lock:
            if state["first"] is None:
                state["first"] = time.monotonic()
        parts = msg.topic.split("/")
        key = parts[1] if len(parts) > 1 else ""
        while True:
            try:
                producer.produce(
                    a.topic,
                    value=msg.payload,
                    key=key,
                    on_delivery=lambda err, m, mid=msg.mid, qos=msg.qos: delivered(err, m, mid, qos),
                )
                break
            except BufferError:
                producer.poll(0.05)

    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = a.receive_maximum
    client.connect("127.0.0.1", a.mqtt_port, keepalive=30, clean_start=False, properties=props)
    client.loop_start()
    deadline = time.monotonic() + a.timeout
    while True:
        producer.poll(0.01)
        with lock:
            done = state["delivered"] >= a.count
        if done or time.monotonic() > deadline:
            break
    producer.flush(30)
    client.loop_stop()
    client.disconnect()
    with lock:
        first, last, n = state["first"], state["last"], state["delivered"]
    secs = (last - first) if first is not None and last is not None else 0.0
    print(
        json.dumps(
            {
                "delivered": n,
                "failed": state["failed"],
                "seconds": secs,
                "rate": (n / secs) if secs > 0 else 0.0,
            }
        )
    )
    return 0 if n >= a.count else 1


if __name__ == "__main__":
    sys.exit(main())
