#!/bin/sh
# Build or refresh .venv-vendors/, the overlay of vendor packages (Arm's tosa-tools, nncf,
# openvino) that the differential tests in tests/vendors/ import. Those packages pin an older
# numpy and flatbuffers than .venv has, so they are not installed into .venv: pip puts exactly
# the pins of .ci/vendor-requirements.txt, without their dependencies, into a folder of its
# own, and tests/vendors/conftest.py appends that folder to sys.path, after .venv's packages.
#
# Quick no-op when the overlay is up to date: the stamp file holds a hash of the requirement
# list, this script and the Python version, and anything else triggers a clean rebuild.
# `sh .ci/vendors.sh --print-key` prints that hash and does nothing else.
set -eu
cd "$(dirname "$0")/.."
OVERLAY=.venv-vendors
REQUIREMENTS=.ci/vendor-requirements.txt
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
    echo "vendors.sh: no .venv here; run sh .ci/bootstrap.sh first" >&2
    exit 1
fi

key=$({ cat "$REQUIREMENTS" .ci/vendors.sh; "$PY" -c 'import sys; print(sys.version)'; } |
    sha256sum | cut -d' ' -f1)
if [ "${1:-}" = "--print-key" ]; then
    echo "$key"
    exit 0
fi
if [ -f "$OVERLAY/.stamp" ] && [ "$(cat "$OVERLAY/.stamp")" = "$key" ]; then
    exit 0
fi

# Build next to the overlay and swap it in at the end, so an interrupted build never leaves
# a half-filled overlay with a valid stamp. Output is kept in a log and shown on failure only:
# pip's one warning here is noise (tosa-tools' console scripts and its own bin/ folder meet in
# the target), and the import check below prints torch's and torchao's start-up chatter.
staging="$OVERLAY.staging"
log="$OVERLAY.log"
rm -rf "$staging"
if ! "$PY" -m pip install --quiet --no-deps --target "$staging" -r "$REQUIREMENTS" \
    >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
# tosa-tools also ships its C++ headers, static libraries and own test suite as top-level
# folders; none is needed at run time, and its `tests` package would shadow this repository's.
rm -rf "$staging/tests" "$staging/include" "$staging/lib" "$staging/lib64"

# The overlay must import with .venv's numpy and flatbuffers, loaded the way the tests load it.
check='
import sys
sys.path.append(sys.argv[1])
import flatbuffers, numpy
import openvino, tosa_reference_model, tosa_serializer
from nncf.experimental.torch.fx import quantize_pt2e
for module in (numpy, flatbuffers):
    if module.__file__.startswith(sys.argv[1]):
        sys.exit(f"{module.__name__} came from the overlay, not from .venv")
'
if ! "$PY" -c "$check" "$staging" >"$log" 2>&1; then
    cat "$log" >&2
    echo "vendors.sh: the packages in $staging do not import with .venv's" >&2
    exit 1
fi
rm -f "$log"

echo "$key" >"$staging/.stamp"
rm -rf "$OVERLAY"
mv "$staging" "$OVERLAY"
echo "vendors.sh: built $OVERLAY ($(du -sh "$OVERLAY" | cut -f1))"
