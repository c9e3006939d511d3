"""Which CUDA kernels each attention core's time goes to (vitspeed.studies.cuda_kernels), on a GPU.

    PYTHONPATH=src python3 tools/cuda_kernel_breakdown.py OUTDIR [--tokens 4096 36864] [--dtypes float32 bfloat16]

Writes OUTDIR/cuda_kernels/<hardware>__<run id>.csv (the attention cores, for the scaling chapter)
and OUTDIR/cuda_model_kernels/<hardware>__<run id>.csv (whole models' forward passes, for the
hybrids chapter), each with its environment record; copy both folders into data/. Exit status 2 with a message when no CUDA device is visible or
an argument is invalid, nothing written.
"""
from __future__ import annotations

import argparse
import sys

from vitspeed.studies import cuda_kernels


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir", help="results folder (the chapter's subfolder is made inside it)")
    p.add_argument("--tokens", type=int, nargs="+", default=[4096, 36864])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--models", nargs="*", default=["efficientvit_b1", "deit_small_patch16_224"],
                   help="whole models (hybrids chapter names) whose forward pass is broken down too; none to skip")
    args = p.parse_args()
    try:
        path = cuda_kernels.measure(tokens=args.tokens, dtypes=args.dtypes, root=args.outdir)
        print(f"wrote {path}")
        if args.models:
            print(f"wrote {cuda_kernels.measure_models(args.models, dtypes=args.dtypes, root=args.outdir)}")
    except ValueError as err:
        print(f"cuda_kernel_breakdown.py: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
