#!/usr/bin/env python3
"""Independent DKIM check for smtp/tests/dkim.rs (test-only helper).

Reads one message on stdin and verifies its first DKIM-Signature with dkimpy. The key
lookup is answered from the environment instead of DNS: DKIM_NAME is the name the
record lives at (<selector>._domainkey.<domain>) and DKIM_TXT its TXT value; any other
name is "not found", so a wrong d= or s= fails too.

Prints "pass" or "fail" on stdout, dkimpy's reasons on stderr. Exit status: 0 pass,
1 fail, 3 when dkimpy or PyNaCl is missing (run scripts/python-tools.sh).
"""

import logging
import os
import sys

try:
    import dkim
    import nacl  # noqa: F401  (dkimpy's Ed25519 support)
except ImportError as e:
    print(f"missing Python module {e.name!r}: run scripts/python-tools.sh", file=sys.stderr)
    sys.exit(3)

name = os.environ["DKIM_NAME"].lower().rstrip(".")
record = os.environ["DKIM_TXT"].encode()


def dnsfunc(qname, timeout=5):
    q = qname.decode() if isinstance(qname, bytes) else qname
    if q.lower().rstrip(".") == name:
        return record
    print(f"lookup of unexpected name {q!r} (expected {name!r})", file=sys.stderr)
    return None


logger = logging.getLogger("dkim-verify")
logger.addHandler(logging.StreamHandler(sys.stderr))
logger.setLevel(logging.DEBUG)

message = sys.stdin.buffer.read()
ok = dkim.verify(message, logger=logger, dnsfunc=dnsfunc)
print("pass" if ok else "fail")
sys.exit(0 if ok else 1)
