#!/usr/bin/env bash
# The prepared GPU check (scripts/gpu_check.py says what it runs): one NVIDIA GPU, PyTorch preinstalled, no network.
# Packages that machine lacks travel as wheels in $WHEELS (default .whl/ in the repository's root), made on a machine
# with the network by scripts/gpu_wheels.sh; they are installed into a folder of their own, nothing is downloaded.
# Usage: bash scripts/gpu_check.sh [--work DIR]     (about 5 minutes on an H100/H200; each check bounded at 110 s,
# the whole at 16 minutes, so a hang is a FAIL line and the summary line still comes)
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/shoptune-site \
        "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/shoptune-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec timeout 960 python3 scripts/gpu_check.py "$@"
