#!/usr/bin/env bash
# GPU check of the released model (see benchmarks/gpu_check.py): one command, at most 8 minutes,
# no downloads. Exit status 0 pass, 1 a check failed, 2 no CUDA, 124 out of time.
# Python: $PYTHON, else the repository's .venv, else python3 (the one that holds torch).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then
    py=$PYTHON
elif [[ -x .venv/bin/python ]]; then
    py=.venv/bin/python
else
    py=python3
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec timeout --kill-after=10 480 "$py" benchmarks/gpu_check.py "$@"
