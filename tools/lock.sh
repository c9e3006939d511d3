#!/usr/bin/env bash
# Regenerate requirements.lock (pinned, Linux x86-64, CPython 3.11) and environment.yml from pyproject.toml.
# torch is held at the version the H200 image ships so the GPU run uses the same build family.
set -euo pipefail
cd "$(dirname "$0")/.."
printf 'torch==2.11.0\ntorchvision==0.26.0\n' > /tmp/vitspeed-constraints.txt
uv pip compile pyproject.toml --extra book --extra test --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 --constraint /tmp/vitspeed-constraints.txt \
    --no-header --annotation-style line -q -o requirements.lock
python3 tools/make_environment_yml.py requirements.lock > environment.yml
