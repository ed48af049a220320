"""The peer of the criterion bench `bounce/analyse_corpus`: flufl.bounce (GNU
Mailman's bounce detector, from PyPI) over the same corpus, parsing each message and
scanning it for bounced addresses. It finds addresses only (no reason, status or
class), so it does less work per message than Maily's analyser.

    pip install flufl.bounce==6.0.0
    python3 benches/peers/bounce_flufl.py [rounds]

Prints messages per second over the corpus in engine/tests/data/bounces/eml.
"""

import email
import pathlib
import sys
import time

from flufl.bounce import scan_message

CORPUS = pathlib.Path(__file__).resolve().parents[2] / "engine/tests/data/bounces/eml"


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    raw = [p.read_bytes() for p in sorted(CORPUS.iterdir()) if p.is_file()]
    found = sum(1 for r in raw if scan_message(email.message_from_bytes(r)))
    start = time.perf_counter()
    for _ in range(rounds):
        for r in raw:
            scan_message(email.message_from_bytes(r))
    elapsed = time.perf_counter() - start
    n = len(raw) * rounds
    print(f"flufl.bounce: {len(raw)} messages, addresses found in {found}; "
          f"{n / elapsed:,.0f} messages/s over {rounds} rounds")


if __name__ == "__main__":
    main()
