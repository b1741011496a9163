#!/usr/bin/env bash
# Sets up .venv (idempotent) and runs the whole pipeline on the embedded default (the `demo` config).
# Extra arguments go to `sail run`, e.g. `bash scripts/demo.sh --config movielens`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/sail run --config demo "$@"
