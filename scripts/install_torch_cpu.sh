#!/usr/bin/env bash
# Installs the CPU builds of torch and fbgemm-gpu-cpu pinned in requirements.lock into a venv.
#
#   bash scripts/install_torch_cpu.sh /path/to/venv/bin/python
#
# Which index serves them:
#   SAIL_TORCH_INDEX_URL set   that index is added with --extra-index-url; nothing else is tried.
#   unset                      the configured pip indexes first; when the pinned builds do not install from them,
#                              once more with --extra-index-url https://download.pytorch.org/whl/cpu.
# One line on stdout names the index that served them. The requirements are the lock's exact pins
# (torch==X+cpu), given both as requirements and as constraints, so no index can hand over a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

CPU_INDEX_URL=https://download.pytorch.org/whl/cpu

die() { echo "setup: ERROR: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: bash scripts/install_torch_cpu.sh /path/to/venv/bin/python"
python=$1

torch_pin=$(sed -nE 's/^(torch==[^[:space:];#]+).*/\1/p' requirements.lock | head -n1)
fbgemm_pin=$(sed -nE 's/^(fbgemm[-_]gpu[-_]cpu==[^[:space:];#]+).*/\1/p' requirements.lock | head -n1)
[[ "$torch_pin" == torch==*+cpu ]] \
  || die "requirements.lock must pin the CPU build of torch (torch==<version>+cpu); it has '${torch_pin:-no torch line}'"
[ -n "$fbgemm_pin" ] || die "requirements.lock has no fbgemm-gpu-cpu==<version> line"

install() {  # install [pip index options...]
  "$python" -m pip install --disable-pip-version-check -q "$@" -c requirements.lock "$torch_pin" "$fbgemm_pin"
}

if [ -n "${SAIL_TORCH_INDEX_URL:-}" ]; then
  install --extra-index-url "$SAIL_TORCH_INDEX_URL" \
    || die "$torch_pin / $fbgemm_pin did not install from SAIL_TORCH_INDEX_URL=$SAIL_TORCH_INDEX_URL (see pip's error above)"
  echo "setup: $torch_pin and $fbgemm_pin installed using SAIL_TORCH_INDEX_URL=$SAIL_TORCH_INDEX_URL"
  exit 0
fi

first_log=$(mktemp)
trap 'rm -f "$first_log"' EXIT
if install >"$first_log" 2>&1; then
  echo "setup: $torch_pin and $fbgemm_pin installed using the configured pip indexes"
  exit 0
fi
echo "setup: $torch_pin did not install from the configured pip indexes; retrying with --extra-index-url $CPU_INDEX_URL"
if install --extra-index-url "$CPU_INDEX_URL"; then
  echo "setup: $torch_pin and $fbgemm_pin installed using $CPU_INDEX_URL"
  exit 0
fi
echo "setup: pip's output from the configured pip indexes:" >&2
tail -n 20 "$first_log" >&2
die "$torch_pin / $fbgemm_pin did not install from the configured pip indexes nor from $CPU_INDEX_URL. Set SAIL_TORCH_INDEX_URL to an index that holds them (see README)."
