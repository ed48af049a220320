#!/usr/bin/env bash
# Kafka adapter throughput beside librdkafka's Python client, one broker, one run.
#   benches/kafka/run.sh [RECORDS] [PARTITIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-50000}"
partitions="${2:-8}"
brokers="${MAILY_TEST_KAFKA:-127.0.0.1:9092}"
scripts/kafka.sh start
python3 -c "import confluent_kafka" 2>/dev/null || pip install --quiet confluent-kafka
cargo build --release -q -p maily-benches --bin kafka-rates
echo "$n records of 1 KB, $partitions partitions, broker $brokers"
"${CARGO_TARGET_DIR:-target}/release/kafka-rates" "$brokers" "$n" "$partitions"
python3 benches/kafka/peer.py "$brokers" "$n" "$partitions"
