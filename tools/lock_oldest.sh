#!/usr/bin/env bash
# Regenerate requirements-oldest.txt: every direct dependency of pyproject.toml (and the `test` extra)
# at the lowest version it declares, the indirect ones resolved as usual (Linux x86-64, CPython 3.11).
# `make test-oldest` installs it into .venv-oldest and runs the unit tests there.
set -euo pipefail
cd "$(dirname "$0")/.."
uv pip compile pyproject.toml --extra test --resolution lowest-direct --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 --annotation-style line -q \
    --custom-compile-command "tools/lock_oldest.sh" -o requirements-oldest.txt
