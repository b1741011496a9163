#!/usr/bin/env bash
# Builds .venv from nothing (or checks it in seconds when it is already current).
#
#   bash scripts/setup.sh
#
# Environment:
#   PYTHON                 interpreter to build the venv with (default: python3.11, then python3)
#   SAIL_TORCH_INDEX_URL   extra pip index holding the CPU wheels of torch 2.13.0+cpu and fbgemm-gpu-cpu 1.8.0.
#                          Unset: the configured pip indexes are tried first, then the official CPU wheel index
#                          https://download.pytorch.org/whl/cpu (scripts/install_torch_cpu.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv"
stamp="$venv/.sail-setup-stamp"

die() { echo "setup: ERROR: $*" >&2; exit 1; }

# --- Java 17+ (PySpark 4 refuses older JVMs) -----------------------------------------------------------
java_bin="${JAVA_HOME:+$JAVA_HOME/bin/}java"
command -v "$java_bin" >/dev/null 2>&1 \
  || die "Java 17 or newer is required by PySpark 4 and was not found. Install it (Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME."
java_major=$("$java_bin" -version 2>&1 | sed -nE 's/.*version "([0-9]+)(\.[0-9]+)*.*/\1/p' | head -n1)
[ -n "$java_major" ] || die "could not read the Java version from '$java_bin -version'."
[ "$java_major" -ge 17 ] \
  || die "Java $java_major found at $(command -v "$java_bin"); PySpark 4 needs Java 17 or newer. Install openjdk-17 and set JAVA_HOME."

# --- Python 3.11 --------------------------------------------------------------------------------------
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
fi
pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
  || die "no Python interpreter '$py'. Install Python 3.11 or set PYTHON=/path/to/python3.11."
[ "$pyver" = "3.11" ] || die "Python 3.11 is required (torch, fbgemm and torchrec wheels are pinned for cp311); '$py' is $pyver. Set PYTHON=/path/to/python3.11."

# --- idempotence: skip when nothing that shapes the venv changed -----------------------------------------
want=$(cat pyproject.toml requirements.lock scripts/setup.sh scripts/install_torch_cpu.sh | sha256sum | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  "$venv/bin/python" scripts/check_env.py --quick && { echo "setup: .venv is up to date"; exit 0; }
  echo "setup: .venv failed its check; rebuilding"
fi

[ -x "$venv/bin/python" ] || "$py" -m venv "$venv" || die "could not create $venv (is the python3.11-venv package installed?)"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
echo "setup: installing torch 2.13.0 (CPU) and fbgemm-gpu-cpu 1.8.0"
# The configured pip indexes, else https://download.pytorch.org/whl/cpu; SAIL_TORCH_INDEX_URL overrides both.
bash scripts/install_torch_cpu.sh "$venv/bin/python"
# torchrec declares a dependency on the CUDA fbgemm-gpu; --no-deps keeps the CPU build in place.
echo "setup: installing torchrec 1.8.0 without its declared dependencies"
"${pip[@]}" --no-deps torchrec==1.8.0 || die "torchrec==1.8.0 did not install"
echo "setup: installing the project and its pinned dependencies"
# The project's own requirements never name torchrec, so this resolve cannot pull the CUDA fbgemm-gpu.
"${pip[@]}" -c requirements.lock -e ".[dev]" || die "the project's dependencies did not install (see the pip error above)"

"$venv/bin/python" scripts/check_env.py || die "the environment check failed (see above)"
echo "$want" > "$stamp"
echo "setup: done ($venv)"
