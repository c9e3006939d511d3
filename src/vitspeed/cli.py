"""The ``vitspeed`` command: list variants and models, count FLOPs, benchmark, run the notebooks.

Every error a user can cause (unknown model/variant/option, an image size the patch or window does
not divide, cuda asked for but absent, an unsupported dtype, an unknown preset or notebook) prints
one sentence naming the valid choices to stderr and exits with status 2, having written nothing.
``vitspeed run --time-budget S`` exits with status 3 when the budget ran out first, and an
interrupted run (Ctrl-C, SIGTERM) with status 130: the results measured so far are in data/ under the
run id the message names, and ``vitspeed run --run-id ID`` resumes them. Running out of memory in
``flops`` or ``bench`` is one line and status 2 as well.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

__all__ = ["main", "build_parser"]


def _parse_options(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes KEY=VALUE, got {item!r}")
        options[key] = value
    return options


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model name (see `vitspeed list`)")
    p.add_argument("--attention", help="attention variant to swap into every block (see `vitspeed list`)")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="attention option, e.g. --opt p=3 (repeatable)")
    p.add_argument("--ffn", help="FFN variant to swap in (mlp, cffn)")
    p.add_argument("--ffn-opt", action="append", metavar="KEY=VALUE", help="FFN option (repeatable)")
    p.add_argument("--img-size", type=int, default=224, help="input resolution in pixels (default 224)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``vitspeed`` command."""
    parser = argparse.ArgumentParser(prog="vitspeed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list attention variants, FFN variants and models")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("flops", help="count MACs (the literature's FLOPs) and parameters")
    _add_model_args(p)
    p.add_argument("--batch-size", type=int, default=1)

    p = sub.add_parser("bench", help="measure latency, throughput and peak memory")
    _add_model_args(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (CUDA only)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--cuda-graph", action="store_true", help="replay a CUDA graph (GPU batch-1 latency)")

    p = sub.add_parser("run", help="execute notebooks with papermill into the book")
    p.add_argument("notebooks", nargs="*", help="notebook names (default: all)")
    p.add_argument("--preset", default="cpu", help="parameter preset in presets/ (default cpu)")
    p.add_argument("--output-dir", default=None, help="where executed notebooks go (default book/chapters)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="start no new measurement after this many seconds; exit 3 if unfinished (rerun resumes)")
    p.add_argument("--run-id", default=None,
                   help="run id of the results (default: the preset's, else a UTC timestamp); "
                        "an interrupted run resumes when run again with its id")

    p = sub.add_parser("profile", help="where a core's or model's CPU time goes: by library routine (Linux perf, "
                       "data/profiles) or by PyTorch operator (a timing dispatch mode, data/op_profiles)")
    p.add_argument("kind", choices=["core", "model"], help="an attention core or a whole model")
    p.add_argument("--by", choices=["routine", "operator"], default="routine",
                   help="routine: perf samples grouped by library routine (default); operator: time per "
                        "top-level aten operator beside its counted MACs (eager only)")
    p.add_argument("targets", nargs="+", help="attention variants (core) or model names (model)")
    p.add_argument("--tokens", type=int, default=4096, help="core: sequence length N (default 4096)")
    p.add_argument("--heads", type=int, default=6, help="core: heads (default 6, DeiT-S)")
    p.add_argument("--head-dim", type=int, default=64, help="core: head size d (default 64)")
    p.add_argument("--img-size", type=int, default=224, help="model: input resolution (default 224)")
    p.add_argument("--attention", help="model: attention variant to swap in")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1], help="batch sizes (default 1)")
    p.add_argument("--dtypes", nargs="+", default=["float32"], help="float32 and/or bfloat16 (default float32)")
    p.add_argument("--modes", nargs="+", default=["eager"], choices=["eager", "compiled"],
                   help="eager and/or compiled with torch.compile (default eager)")
    p.add_argument("--seconds", type=float, default=3.0, help="how long each call is repeated under the sampler")
    p.add_argument("--rounds", type=int, default=1,
                   help="operator profiles: profile every config this many times, interleaved (default 1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--run-id", default=None, help="run id of the saved profile (default: a UTC timestamp)")
    p.add_argument("--no-save", action="store_true", help="print only; write nothing to data/")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("monitor", help="how steady this machine is: memory copy, GEMM, DeiT-S and explicit-attention "
                       "probes, repeated for a while (data/host_monitor)")
    p.add_argument("--seconds", type=float, default=600.0, help="how long to keep probing (default 600)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--run-id", default=None, help="run id of the saved series (default: a UTC timestamp)")
    p.add_argument("--no-save", action="store_true", help="print only; write nothing to data/")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _cmd_monitor(args: argparse.Namespace) -> dict[str, Any]:
    from vitspeed.host_monitor import monitor_rows, save_monitor

    if args.no_save:
        rows, _ = monitor_rows(args.seconds, args.threads)
        path = None
    else:
        path = save_monitor(args.seconds, args.threads, run_id=args.run_id)
        from vitspeed.results import read_csv

        rows = read_csv(path).to_dict("records")
    if not args.json:
        print(" tick  elapsed_s  copy GB/s  GEMM GFLOP/s  DeiT-S ms  explicit core ms  steal %  pressure %")
        for r in rows:
            print(f"{int(r['tick']):5d} {float(r['elapsed_s']):10.1f} {float(r['copy_gbps']):10.1f} "
                  f"{float(r['gemm_gflops']):13.1f} {float(r['model_ms']):10.1f} {float(r['core_ms']):17.1f} "
                  f"{r['steal_pct']!s:>8} {r['cpu_pressure_pct']!s:>11}")
        if path:
            print(f"saved: {path}")
    return {"rows": rows, "path": str(path) if path else None}


def _cmd_profile(args: argparse.Namespace) -> dict[str, Any]:
    if args.by == "operator":
        from vitspeed.op_profile import op_profile_many as profile_many
        from vitspeed.op_profile import op_profile_rows as profile_rows
    else:
        from vitspeed.profiling import profile_many, profile_rows

    if min(args.batch_sizes) < 1:
        raise ValueError(f"--batch-sizes must be at least 1, got {min(args.batch_sizes)}")
    configs = []
    for target in args.targets:
        for batch_size in args.batch_sizes:
            for dtype in args.dtypes:
                for mode in args.modes:
                    cfg = {"kind": args.kind, "target": target, "dtype": dtype, "batch_size": batch_size,
                           "compiled": mode == "compiled", "seconds": args.seconds, "threads": args.threads}
                    if args.kind == "core":
                        cfg.update(tokens=args.tokens, heads=args.heads, head_dim=args.head_dim)
                    else:
                        cfg.update(img_size=args.img_size, attention=args.attention)
                    configs.append(cfg)
    extra = {}
    if args.by == "operator":
        extra["rounds"] = args.rounds
    elif args.rounds != 1:
        raise ValueError(f"--rounds applies to --by operator only (a routine profile samples once), got {args.rounds}")
    if args.no_save:
        rows, _ = profile_rows(configs, **extra)
        path = None
    else:
        path = profile_many(configs, run_id=args.run_id, **extra)
        from vitspeed.results import read_csv

        rows = read_csv(path).to_dict("records")
    if not args.json and args.by == "operator":
        last = None
        for r in rows:
            key = (r["target"], r["batch_size"], r["dtype"], r["round"])
            if key != last:
                print(f"{r['kind']} {r['target']} (batch {r['batch_size']}, {r['dtype']}, eager, round {r['round']}): "
                      f"{r['passes']} passes, "
                      f"{float(r['profiled_ms_per_pass']):.2f} ms in operators and "
                      f"{float(r['wall_ms_per_pass']):.2f} ms wall per pass under the timer, "
                      f"{float(r['page_faults_per_pass']):.0f} page faults per pass")
                last = key
            rate = f"{float(r['gmacs_per_s']):7.1f} GMAC/s" if str(r["gmacs_per_s"]) not in ("", "nan") else ""
            print(f"  {float(r['share_pct']):5.1f}%  {r['operator']:<36} {r['category']:<14} {rate}")
        if path:
            print(f"saved: {path}")
    elif not args.json:
        last = None
        for r in rows:
            key = (r["target"], r["batch_size"], r["dtype"], r["compiled"])
            if key != last:
                mode = "compiled" if str(r["compiled"]) == "True" else "eager"
                print(f"{r['kind']} {r['target']} (batch {r['batch_size']}, {r['dtype']}, {mode}): {r['calls']} calls, "
                      f"{float(r['ms_per_call']):.2f} ms per call under the sampler, {r['total_samples']} samples")
                last = key
            print(f"  {float(r['share_pct']):5.1f}%  {r['group']:<30} {r['top_symbol'][:70]}")
        if path:
            print(f"saved: {path}")
    return {"rows": rows, "path": str(path) if path else None}


def _cmd_list(args: argparse.Namespace) -> dict[str, Any]:
    from vitspeed.attention import get_attention, list_attentions
    from vitspeed.ffn import list_ffns
    from vitspeed.models import get_model_spec, list_models

    attentions = []
    for name in list_attentions():
        spec = get_attention(name)
        attentions.append({"name": name, "family": spec.family, "complexity": spec.complexity,
                           "options": spec.options, "summary": spec.summary})
    models = []
    for name in list_models():
        spec = get_model_spec(name)
        models.append({"name": name, "summary": spec.summary if spec else "timm model",
                       "swappable": bool(spec.swappable) if spec else name.startswith(("deit", "vit", "swin"))})
    result = {"attention": attentions, "ffn": list_ffns(), "models": models}
    if not args.json:
        print("Attention variants (--attention NAME, options with --opt KEY=VALUE):")
        for a in attentions:
            opts = ", ".join(f"{k}={v}" for k, v in a["options"].items()) or "-"
            print(f"  {a['name']:<24} {a['family']:<10} {a['complexity']:<10} [{opts}] {a['summary']}")
        print("FFN variants (--ffn NAME): " + ", ".join(result["ffn"]))
        print("Models:")
        for m in models:
            print(f"  {m['name']:<32} {m['summary']}")
    return result


def _build(args: argparse.Namespace):
    from vitspeed.models import create_model

    return create_model(args.model, img_size=args.img_size, attention=args.attention,
                        attention_options=_parse_options(args.opt, "--opt"), ffn=args.ffn,
                        ffn_options=_parse_options(args.ffn_opt, "--ffn-opt"))


def _cmd_flops(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from vitspeed.flops import count_flops, count_params

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    model = _build(args)
    fc = count_flops(model, torch.zeros(args.batch_size, 3, args.img_size, args.img_size))
    result = {"model": args.model, "attention": args.attention, "ffn": args.ffn, "img_size": args.img_size,
              "batch_size": args.batch_size, "macs": fc.macs, "gmacs": fc.macs / 1e9,
              "elementwise_ops": fc.elementwise, "params": count_params(model),
              "breakdown": fc.breakdown(), "unhandled_ops": fc.unhandled,
              "convention": "MACs (1 multiply-accumulate = 1); elementwise ops counted separately"}
    if not args.json:
        print(f"{args.model} @ {args.img_size}px, batch {args.batch_size}: {fc.macs / 1e9:.3f} GMACs, "
              f"{result['params'] / 1e6:.2f} M params, {fc.elementwise / 1e9:.3f} G elementwise ops")
        for group, counts in result["breakdown"].items():
            print(f"  {group:<10} {counts['macs'] / 1e9:8.3f} GMACs  {counts['elementwise'] / 1e9:8.3f} G elementwise")
        if fc.unhandled:
            print(f"  uncounted ops: {fc.unhandled}")
    return result


def _cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    from vitspeed.envinfo import environment_record, resolve_device, resolve_dtype, strict_fp32
    from vitspeed.timing import benchmark_model

    device = resolve_device(args.device)
    resolve_dtype(args.dtype, device.type)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.repeats < 1 or args.warmup < 0:  # before the model is built and run
        raise ValueError(f"--repeats must be >= 1 and --warmup >= 0; got --repeats {args.repeats}, --warmup {args.warmup}")
    model = _build(args)
    row = benchmark_model(model, (3, args.img_size, args.img_size), device=str(device), dtype=args.dtype,
                          batch_size=args.batch_size, threads=args.threads, warmup=args.warmup,
                          repeats=args.repeats, cuda_graph=args.cuda_graph)
    with strict_fp32():  # the flags the timing ran under (benchmark_model times inside strict_fp32)
        env = environment_record(str(device), args.dtype, args.threads)
    result = {"model": args.model, "attention": args.attention, "ffn": args.ffn, "img_size": args.img_size,
              **row, "environment": env}
    if not args.json:
        print(f"{args.model} @ {args.img_size}px, batch {args.batch_size}, {args.dtype} on {device}: "
              f"median {row['median_ms']:.3f} ms (IQR {row['iqr_ms']:.3f} ms, n={row['n']}), "
              f"{row['throughput']:.1f} img/s, peak memory {row.get('peak_mem_mb', float('nan')):.1f} MiB")
    return result


def _cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    from vitspeed.runner import call_run_id, load_preset, resume_hint, run_notebooks

    # the run id is fixed here, so that an interruption can say how to resume
    given = args.run_id
    run_id = call_run_id(load_preset(args.preset), given)
    args.interrupted_hint = resume_hint(run_id)
    # only an explicit --run-id overrides the run ids a preset gives single notebooks
    executed = run_notebooks(args.notebooks or None, preset=args.preset, output_dir=args.output_dir,
                             time_budget_s=args.time_budget, run_id=given, default_run_id=run_id)
    return {"executed": [str(p) for p in executed], "run_id": run_id}


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does: no half-written chapter is left


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input, 3 ``run`` stopped by its time budget)."""
    from vitspeed.runner import RunIncomplete

    import signal

    from vitspeed.timing import is_oom_error

    args = build_parser().parse_args(argv)
    handlers = {"list": _cmd_list, "flops": _cmd_flops, "bench": _cmd_bench, "run": _cmd_run, "profile": _cmd_profile,
                "monitor": _cmd_monitor}
    previous = signal.signal(signal.SIGTERM, _terminate) if args.command == "run" else None
    try:
        result = handlers[args.command](args)
    except ValueError as err:
        print(f"vitspeed {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RunIncomplete as err:
        print(f"vitspeed {args.command}: incomplete: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        hint = getattr(args, "interrupted_hint", "")
        print(f"vitspeed {args.command}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130
    except (RuntimeError, MemoryError) as err:
        if not is_oom_error(err):
            raise
        print(f"vitspeed {args.command}: error: out of memory ({str(err).splitlines()[0][:160]}); "
              "try a smaller --img-size or --batch-size", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if getattr(args, "json", False):
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
