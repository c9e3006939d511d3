#!/usr/bin/env bash
# Run the gpu preset of the chapters on a CUDA machine with no network access.
#   tools/gpu_run.sh OUTDIR [NOTEBOOK ...]
# Installs what the machine lacks from the wheels in .whl/ (tools/gpu_wheels.sh), then executes the
# named notebooks (default: all) with papermill and the gpu preset. Results and environment records go
# to OUTDIR/data/<chapter>/, executed notebooks to OUTDIR/notebooks/. The preset fixes the run id, so
# running the same command again resumes: configurations already in OUTDIR/data are skipped.
# Split a long sweep over several calls by naming a few notebooks each time (each call < 10 min).
set -euo pipefail
out=${1:?usage: tools/gpu_run.sh OUTDIR [NOTEBOOK ...]}
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
site=/tmp/vitspeed-site
if compgen -G "$repo/.whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$repo"/.whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$repo/src:${PYTHONPATH:-}"
export VITSPEED_RESULTS_DIR="$out/data" PYTHONUNBUFFERED=1 MPLBACKEND=Agg TQDM_DISABLE=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.cuda.get_device_name(0))"
python3 -m vitspeed.cli run --preset gpu --output-dir "$out/notebooks" "$@"
echo "results in $out/data"
