#!/usr/bin/env bash
# Installs the real servers the test suite talks to on 127.0.0.1. Idempotent: does nothing when
# they are already on PATH. Needs root for apt-get; without root it only says what is missing
# (the tests that need a missing server then skip locally and fail in CI, where CI=true).
#
#   victoria-metrics  InfluxDB v2 write endpoint (/api/v2/write) + read-back (/api/v1/export),
#                     for tests/drivers/test_influx.py
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ]; }

missing=()
have victoria-metrics || missing+=(victoria-metrics)

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-test-services: victoria-metrics present ($(command -v victoria-metrics || echo /usr/bin/victoria-metrics))"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-services: missing ${missing[*]}; not root, so not installing" \
         "(run: sudo apt-get install -y --no-install-recommends ${missing[*]})" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-services: missing ${missing[*]} and no apt-get here; install it by hand" >&2
    exit 0
fi

echo "install-test-services: apt-get update"
apt-get update -q
echo "install-test-services: apt-get install -y --no-install-recommends ${missing[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-test-services: done"
