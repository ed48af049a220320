#!/usr/bin/env bash
# Installs the Python packages Maily's tests use as independent checkers, pinned, when
# they are missing:
#   dkimpy   verifies the DKIM signatures maily-smtp makes (smtp/tests/dkim.rs, through
#            smtp/tests/data/dkim/verify.py); it needs dnspython,
#   PyNaCl   for dkimpy's Ed25519 (RFC 8463) support,
#   openapi-spec-validator   checks the admin API's OpenAPI document
#            (api/tests/admin.rs, as `python3 -m openapi_spec_validator`).
# Idempotent and quiet: when the modules already import it installs nothing.
# Uses the python3 on PATH (the one the tests run); PYTHON=... picks another.
set -euo pipefail

PYTHON=${PYTHON:-python3}
DKIMPY_VERSION=1.1.8
PYNACL_VERSION=1.6.2
DNSPYTHON_VERSION=2.9.2
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "python-tools: $PYTHON not found; install Python 3 (e.g. apt-get install python3 python3-pip)" >&2
  exit 1
fi

if "$PYTHON" -c 'import dkim, nacl, dns, openapi_spec_validator' >/dev/null 2>&1; then
  exit 0
fi

if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  echo "python-tools: pip is missing for $PYTHON; install it (e.g. apt-get install python3-pip)" >&2
  exit 1
fi

echo "python-tools: installing dkimpy $DKIMPY_VERSION, PyNaCl $PYNACL_VERSION, dnspython $DNSPYTHON_VERSION, openapi-spec-validator $OPENAPI_SPEC_VALIDATOR_VERSION" >&2
pip_args=(--quiet --disable-pip-version-check)
# Debian's system Python refuses user installs without this (PEP 668); a virtualenv or
# pyenv Python does not need it.
stdlib=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
in_venv=$("$PYTHON" -c 'import sys; print(int(sys.prefix != sys.base_prefix))')
if [ "$in_venv" = 0 ] && [ -e "$stdlib/EXTERNALLY-MANAGED" ]; then
  pip_args+=(--break-system-packages)
fi
# Running as root (CI, containers) is expected here: no warning about it.
PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install "${pip_args[@]}" \
  "dkimpy==$DKIMPY_VERSION" "PyNaCl==$PYNACL_VERSION" "dnspython==$DNSPYTHON_VERSION" \
  "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"

"$PYTHON" -c 'import dkim, nacl, dns, openapi_spec_validator' || {
  echo "python-tools: dkimpy/PyNaCl/openapi-spec-validator still not importable after install" >&2
  exit 1
}
