"""The same workload as kafka-rates with librdkafka's Python client (confluent-kafka).

Usage: peer.py BROKERS RECORDS PARTITIONS
"""
import os
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

brokers, n, partitions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
topic = f"peer-{os.getpid()}.rates"
admin = AdminClient({"bootstrap.servers": brokers})
admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result()
time.sleep(0.5)

producer = Producer({
    "bootstrap.servers": brokers,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.size": 1048576,
    "compression.type": "lz4",
})
payload = b"x" * 1024
started = time.perf_counter()
for start in range(0, n, 1000):
    for i in range(start, min(start + 1000, n)):
        while True:
            try:
                producer.produce(topic, payload, key=f"key-{i % 1000}", partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.005)
    # As kafka-rates does: each chunk acknowledged before the next.
    producer.flush()
produce = time.perf_counter() - started

consumer = Consumer({
    "bootstrap.servers": brokers,
    "group.id": f"peer-{os.getpid()}",
    "enable.auto.commit": False,
    "fetch.wait.max.ms": 50,
})
consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
started = time.perf_counter()
read = 0
while read < n:
    for m in consumer.consume(5000, timeout=5.0):
        if m.error() is None:
            read += 1
consume = time.perf_counter() - started
consumer.close()
print(f"python   produce {n / produce:>9.0f} rec/s  consume {n / consume:>9.0f} rec/s")
