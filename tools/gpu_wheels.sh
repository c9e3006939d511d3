#!/usr/bin/env bash
# Fetch, on a machine with the package index, the wheels a bare GPU box (CPython 3.12, x86-64,
# its own torch/timm/numpy/pandas/seaborn, no network) lacks to run the gpu preset.
# Writes .whl/ (git-ignored); tools/gpu_run.sh installs from it. Usage: tools/gpu_wheels.sh [DIR]
# VITSPEED_WHEEL_PYTHON (default 3.12, the GPU image's) picks the CPython the wheels are for; another
# version is only for rehearsing the offline install on a machine with that Python.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
py=${VITSPEED_WHEEL_PYTHON:-3.12}
uv=$(command -v uv || echo .venv/bin/uv)  # make env installs uv into .venv
rm -rf "$dest" && mkdir -p "$dest"  # from scratch: two versions of one package stop the offline install
# What the study needs beyond the GPU image: the FLOPs counter and the notebook runner.
# timm is pinned to the version the lock file tests, whatever the image ships.
want=(fvcore papermill ipykernel nbformat)
timm_pin="timm==$(sed -n 's/^timm==\([^ ]*\).*/\1/p' requirements.lock)"
# Packages the GPU image already has (its package list in the device notes, 2026-11-17):
# their wheels are not carried.
have=" absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
 build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
 cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops
 equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch
 grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig
 interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
 lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
 markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
 multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
 nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
 nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
 nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime
 onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint
 packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
 protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
 pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
 pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
 scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
 sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
 threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
 torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect
 urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp "
have=" $(echo $have) "  # one space between names, also where the list above breaks its lines
tmp=$(mktemp)
printf '%s\n' "${want[@]}" > "$tmp.in"
"$uv" pip compile "$tmp.in" --python-version "$py" --python-platform x86_64-manylinux_2_28 --no-header \
    --no-annotate -q -o "$tmp"
while read -r pin; do
  [ -z "$pin" ] && continue
  name=$(echo "${pin%%==*}" | tr 'A-Z_' 'a-z-')
  case "$have" in *" $name "*) continue ;; esac
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d "$dest" "$pin" \
  || python3 -m pip download -q --no-deps --no-binary=:all: -d "$dest" "$pin"  # sdist-only (fvcore, iopath)
done < "$tmp"
rm -f "$tmp" "$tmp.in"
# timm without its dependencies: torch and torchvision come from the image.
python3 -m pip download -q --no-deps --only-binary=:all: -d "$dest" "$timm_pin"
# sdists cannot be installed offline without a build step: build them into wheels here.
for sdist in "$dest"/*.tar.gz; do
  [ -e "$sdist" ] || continue
  python3 -m pip wheel -q --no-deps -w "$dest" "$sdist" && rm -f "$sdist"
done
du -sh "$dest"
