#!/usr/bin/env bash
# Run the gpu preset of the chapters on a CUDA machine with no network access, in parts.
#
#   tools/gpu_run.sh OUTDIR [NOTEBOOK ...]
#
# 1. Installs what the machine lacks from the wheels in .whl/ (made by tools/gpu_wheels.sh) into
#    /tmp/vitspeed-site, with no index: nothing is downloaded.
# 2. Copies the results of earlier parts (data/<chapter>/*__<run id>.*, run id from the preset;
#    VITSPEED_RESUME_FROM names another results folder), and those an earlier call on this same machine
#    kept in /tmp/vitspeed-state, into a fresh work folder, so a part resumes where the last one stopped.
# 3. Executes the named notebooks (default: all, in order) with papermill and the preset; results
#    and environment records go to the work folder's data/<chapter>/, executed notebooks beside them.
#    No measurement starts after VITSPEED_TIME_BUDGET seconds (default 420), so one call stays well
#    inside a 10-minute slot.
# 4. Packs the results into OUTDIR/results.tar.gz (unpack it in the repository's root: it holds
#    data/<chapter>/<hardware>__<run id>.*) and the executed notebooks into OUTDIR/executed.tar.gz:
#    OUTDIR holds only these two archives, for transfers that cap the number of files. While the
#    notebooks run, results.tar.gz (and the machine's state folder) are refreshed every
#    VITSPEED_PACK_EVERY seconds (default 60), so a call killed at its time limit still brings back
#    what it measured.
#
# Exit status: 0 when every notebook finished, 3 when the budget ran out first (run the same command
# again, with the results brought back into data/, to resume), anything else is a failure.
# Environment: VITSPEED_PRESET (default gpu), VITSPEED_TIME_BUDGET (seconds), VITSPEED_STATE_DIR,
# VITSPEED_ALLOW_CPU=1 to rehearse on a machine without CUDA (with a preset whose device is cpu, e.g. smoke).
set -euo pipefail
out=${1:?usage: tools/gpu_run.sh OUTDIR [NOTEBOOK ...]}
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
preset=${VITSPEED_PRESET:-gpu}
budget=${VITSPEED_TIME_BUDGET:-420}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/vitspeed-work.XXXXXX)  # results and executed notebooks; OUTDIR gets archives only
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/data" "$work/executed"
python=${PYTHON:-python3}

site=/tmp/vitspeed-site
if compgen -G "$repo/.whl/*.whl" >/dev/null; then
  rm -rf "$site"  # a fresh target: pip --target keeps an older version's metadata beside the new one
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
      "$repo"/.whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
elif ! "$python" -c "import papermill, nbformat, timm, fvcore, sympy" 2>/dev/null; then
  echo "gpu_run.sh: no wheels in $repo/.whl and this python lacks papermill/timm/fvcore/sympy;" \
       "run tools/gpu_wheels.sh where the package index is reachable and bring .whl/ along" >&2
  exit 2
fi
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
# Jupyter, IPython and matplotlib write state under $HOME, which a bare machine may not let us write
scratch=/tmp/vitspeed-home
mkdir -p "$scratch"
export JUPYTER_RUNTIME_DIR="$scratch/jupyter-runtime" IPYTHONDIR="$scratch/ipython" MPLCONFIGDIR="$scratch/mpl"
export VITSPEED_RESULTS_DIR="$work/data" PYTHONUNBUFFERED=1 MPLBACKEND=Agg TQDM_DISABLE=1

if [ "${VITSPEED_ALLOW_CPU:-0}" != 1 ]; then
  "$python" -c "import torch, sys; torch.cuda.is_available() or sys.exit('gpu_run.sh: no CUDA device visible; \
set VITSPEED_ALLOW_CPU=1 to rehearse on the CPU'); print('GPU:', torch.cuda.get_device_name(0))"
fi

run_id=$("$python" -c "from vitspeed.runner import load_preset; print(load_preset('$preset')['parameters'].get('run_id', ''))")
resume_from=${VITSPEED_RESUME_FROM:-$repo/data}
state=${VITSPEED_STATE_DIR:-/tmp/vitspeed-state}  # outlives $OUT on a machine kept warm between calls
if [ -n "$run_id" ]; then
  # the machine-local copy first: it is at least as far along as the one brought in the tree
  for f in "$state"/*/*__"$run_id".csv "$state"/*/*__"$run_id".env.json \
           "$resume_from"/*/*__"$run_id".csv "$resume_from"/*/*__"$run_id".env.json; do
    [ -e "$f" ] || continue
    chapter=$(basename "$(dirname "$f")")
    mkdir -p "$work/data/$chapter"
    [ -e "$work/data/$chapter/$(basename "$f")" ] || cp "$f" "$work/data/$chapter/"
  done
fi

pack() {  # results so far into OUTDIR/results.tar.gz, replaced atomically (result files are written
  # atomically), and into the state folder for the next call on this machine
  local part
  part=$(mktemp "$out/.results.XXXXXX")
  tar czf "$part" -C "$work" data && mv -f "$part" "$out/results.tar.gz"
  mkdir -p "$state" && cp -r "$work/data/." "$state/"
}
# Pack every minute while the sweep runs: a call killed at its time limit still returns what it measured.
# The packer's output goes nowhere and it takes its sleep with it when stopped, so nothing it started
# outlives the script holding the caller's output open; stopped mid-pack, it finishes that pack first.
( stop=
  trap 'stop=1; kill $! 2>/dev/null' TERM
  while [ -z "$stop" ]; do
    sleep "${VITSPEED_PACK_EVERY:-60}" & wait $! || true
    [ -n "$stop" ] || pack || true
  done ) >/dev/null 2>&1 &
packer=$!
trap 'kill $packer 2>/dev/null || true; rm -rf "$work"' EXIT

rc=0
"$python" -m vitspeed.cli run --preset "$preset" --output-dir "$work/executed" --time-budget "$budget" "$@" || rc=$?
kill $packer 2>/dev/null || true
wait $packer 2>/dev/null || true
pack
tar czf "$out/executed.tar.gz" -C "$work" executed
case $rc in
  0) echo "gpu_run.sh: complete; results packed in $out/results.tar.gz" ;;
  3) echo "gpu_run.sh: time budget reached; unpack $out/results.tar.gz into the repository and run again to resume" ;;
  *) echo "gpu_run.sh: failed with status $rc" >&2 ;;
esac
exit $rc
