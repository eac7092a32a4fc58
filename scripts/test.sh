#!/usr/bin/env bash
# The one test command: the README, .ci/run and developers all call this.
# Integration tests use the Redis at CONVEYOR_TEST_REDIS_URL (default redis://127.0.0.1:6379/13);
# they skip locally when it does not answer and fail when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
