"""Execute the study's notebooks with papermill, using a parameter preset, into the book.

Presets live in ``presets/<name>.yaml``::

    description: one line
    parameters: {device: cpu}          # given to every notebook that declares them
    environment: {NAME: value}         # optional: set for the notebooks' kernels (not for the caller)
    notebooks:
      01_complexity: {sizes: [...]}    # per-notebook parameters, override the shared ones

Only parameters a notebook declares in its ``parameters`` cell are passed to it. Executed notebooks
are written atomically (temp file, then rename) to ``book/chapters/``, papermill's per-cell timing
metadata stripped, so that a failed run never leaves a half-written chapter.

A *time budget* (``time_budget_s``) bounds one call: past it no sweep starts a new configuration
(:data:`vitspeed.timing.DEADLINE_ENV` tells the notebooks' kernels when), the notebook that was
stopped is not written, and :class:`RunIncomplete` is raised. Results already measured are in
data/, so running the same command again (same preset, hence the same run id) resumes.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import yaml

__all__ = ["repo_root", "list_presets", "load_preset", "list_notebooks", "run_notebooks", "strip_run_metadata",
           "RunIncomplete", "resume_hint", "call_run_id", "PARTIAL_PREFIX"]


class RunIncomplete(RuntimeError):
    """The time budget ran out before every notebook finished; ``executed`` lists those that did."""

    def __init__(self, message: str, executed: list[Path]) -> None:
        super().__init__(message)
        self.executed = executed


#: name prefix of a notebook being executed (renamed to its chapter when it completes)
PARTIAL_PREFIX = ".partial-"


def call_run_id(config: dict[str, Any], run_id: str | None = None) -> str:
    """The run id of one call with preset ``config``: ``run_id`` if given, else the preset's shared one,
    else a new one (:func:`vitspeed.results.new_run_id`); ``ValueError`` if it is not filesystem-safe."""
    from vitspeed.results import check_run_id, new_run_id

    return check_run_id(str(run_id or config["parameters"].get("run_id") or new_run_id()))


def resume_hint(run_id: str) -> str:
    """How to resume an interrupted run, in words."""
    return f"the results so far are in data/ under run id {run_id}: run again with --run-id {run_id} to resume"


def repo_root() -> Path:
    """The repository holding presets/ and notebooks/ (found from this file, else the cwd)."""
    for base in (Path(__file__).resolve(), Path.cwd().resolve()):
        for parent in (base, *base.parents):
            if (parent / "presets").is_dir() and (parent / "notebooks").is_dir():
                return parent
    raise ValueError("cannot find the vitspeed repository (a folder with presets/ and notebooks/)")


def list_presets(root: Path | None = None) -> list[str]:
    """Names of the preset files in presets/."""
    root = root or repo_root()
    return sorted(p.stem for p in (root / "presets").glob("*.yaml"))


def load_preset(name: str, root: Path | None = None) -> dict[str, Any]:
    """Read a preset; an unknown name raises ``ValueError`` listing the valid presets."""
    root = root or repo_root()
    path = root / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; valid choices: {', '.join(list_presets(root))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise ValueError(f"preset {name!r} is not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"preset {name!r} must be a mapping with keys description, parameters, environment, "
                         f"notebooks; got a {type(data).__name__}")
    unknown = sorted(set(data) - {"description", "parameters", "environment", "notebooks"})
    if unknown:
        raise ValueError(f"preset {name!r} has unknown keys {unknown}; valid choices: description, parameters, "
                         "environment, notebooks")
    data["parameters"] = data.get("parameters") or {}
    data["notebooks"] = data.get("notebooks") or {}
    if not isinstance(data["parameters"], dict):
        raise ValueError(f"preset {name!r}: 'parameters' must map parameter names to values; got {data['parameters']!r}")
    if not isinstance(data["notebooks"], dict) or not all(v is None or isinstance(v, dict)
                                                          for v in data["notebooks"].values()):
        raise ValueError(f"preset {name!r}: 'notebooks' must map notebook names to their parameters")
    bad = sorted(set(data["notebooks"]) - set(list_notebooks(root)))
    if bad:
        raise ValueError(f"preset {name!r} names unknown notebooks {bad}; valid choices: "
                         f"{', '.join(list_notebooks(root))}")
    env = data.setdefault("environment", {}) or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, (str, int, float))
                                            for k, v in env.items()):
        raise ValueError(f"preset {name!r}: 'environment' must map variable names to strings or numbers; "
                         f"got {env!r}")
    data["environment"] = {k: str(v) for k, v in env.items()}
    return data


def list_notebooks(root: Path | None = None) -> list[str]:
    """Notebook names (file stems) in notebooks/, in chapter order."""
    root = root or repo_root()
    return sorted(p.stem for p in (root / "notebooks").glob("*.ipynb"))


DISPLAY_TAGS = ("remove-cell", "remove-input", "hide-cell", "hide-input")


def strip_run_metadata(nb: Any) -> Any:
    """Remove papermill's timing/status metadata from a notebook object (in place, returned).

    Papermill's injected parameters cell is shown as the parameters cell is: it inherits that cell's
    display tags (``remove-cell``, ``remove-input``, ``hide-cell``, ``hide-input``).
    """
    nb.metadata.pop("papermill", None)
    shown_as = [t for c in nb.cells if "parameters" in c.metadata.get("tags", [])
                for t in c.metadata.get("tags", []) if t in DISPLAY_TAGS]
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags:
            cell.metadata["tags"] = [*tags, *(t for t in shown_as if t not in tags)]
    return nb


def _resolve(names: Iterable[str] | None, root: Path) -> list[str]:
    available = list_notebooks(root)
    if not names:
        return available
    resolved = []
    for name in names:
        stem = Path(name).stem
        if stem not in available:
            raise ValueError(f"unknown notebook {name!r}; valid choices: {', '.join(available)}")
        resolved.append(stem)
    return resolved


def _check_parameters(config: dict[str, Any], preset: str, stems: list[str], root: Path) -> dict[str, dict]:
    """Each selected notebook's declared parameters; ``ValueError`` for a preset key no notebook takes
    (a typo would otherwise be ignored silently) or a device / dtype this machine cannot run."""
    import papermill as pm

    from vitspeed.envinfo import resolve_device, resolve_dtype

    declared = {stem: pm.inspect_notebook(str(root / "notebooks" / f"{stem}.ipynb"))
                for stem in set(stems) | set(config["notebooks"])}
    for stem, own in config["notebooks"].items():
        extra = sorted(set(own or {}) - set(declared[stem]))
        if extra:
            raise ValueError(f"preset {preset!r}: notebook {stem} has no parameters {extra}; valid choices: "
                             f"{', '.join(sorted(declared[stem]))}")
    shared = set(config["parameters"])
    if shared:
        every = set().union(*(pm.inspect_notebook(str(root / "notebooks" / f"{s}.ipynb"))
                              for s in list_notebooks(root)))
        extra = sorted(shared - every)
        if extra:
            raise ValueError(f"preset {preset!r}: no notebook has parameters {extra}; valid choices: "
                             f"{', '.join(sorted(every))}")
    for stem in stems:
        wanted = {**config["parameters"], **(config["notebooks"].get(stem) or {})}
        if "device" in wanted:
            dev = resolve_device(str(wanted["device"]))  # ValueError naming this machine's devices
            for dt in wanted.get("dtypes") or []:
                resolve_dtype(str(dt), dev.type)
    return {stem: declared[stem] for stem in stems}


def run_notebooks(names: Iterable[str] | None = None, preset: str = "cpu", output_dir: str | Path | None = None,
                  root: Path | None = None, time_budget_s: float | None = None,
                  run_id: str | None = None, default_run_id: str | None = None) -> list[Path]:
    """Execute notebooks (all by default) with ``preset``; return the executed notebooks' paths.

    Every notebook that declares ``run_id`` gets the same one: ``run_id`` if given, else the one the
    preset gives that notebook, else ``default_run_id``, else the preset's shared one, else one made
    now (UTC timestamp), so that one call is one run and ``run_id`` resumes it.
    ``time_budget_s`` (seconds from now): no sweep configuration starts after it, and
    :class:`RunIncomplete` is raised if a notebook could not finish (run again to resume). Preset
    keys that no notebook declares, and devices or dtypes this machine lacks, raise ``ValueError``
    before any notebook starts; a notebook that fails with a ``ValueError`` (bad input found inside)
    raises one ``ValueError`` naming the notebook.
    """
    import nbformat
    import papermill as pm

    from vitspeed.timing import DEADLINE_ENV

    root = root or repo_root()
    config = load_preset(preset, root)
    stems = _resolve(names, root)
    declared_by = _check_parameters(config, preset, stems, root)
    explicit_run_id = run_id
    run_id = call_run_id(config, run_id or default_run_id)
    if time_budget_s is not None and not time_budget_s >= 0:
        raise ValueError(f"time budget must be a number of seconds >= 0; got {time_budget_s}")
    deadline = None if time_budget_s is None else time.time() + float(time_budget_s)
    out_dir = Path(output_dir) if output_dir else root / "book" / "chapters"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot use {str(out_dir)!r} as the output folder: {err.strerror or err}") from err
    for stale in out_dir.glob(f"{PARTIAL_PREFIX}*.ipynb"):  # left by a run killed mid-notebook
        stale.unlink()
    executed: list[Path] = []
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would end up in the book's outputs
    # the kernels inherit this process's environment: the deadline and the preset's variables
    kernel_env = dict(config["environment"])
    if deadline is not None:
        kernel_env[DEADLINE_ENV] = repr(deadline)
    previous = {name: os.environ.get(name) for name in kernel_env}
    os.environ.update(kernel_env)
    try:
        for stem in stems:
            if deadline is not None and time.time() >= deadline:
                raise RunIncomplete(f"time budget of {time_budget_s:g} s reached before {stem}; "
                                    f"{resume_hint(run_id)}", executed)
            source = root / "notebooks" / f"{stem}.ipynb"
            declared = declared_by[stem]
            own = config["notebooks"].get(stem) or {}
            # --run-id first, then a run id the preset gives this notebook, then the call's
            rid = explicit_run_id or own.get("run_id") or run_id
            wanted = {**config["parameters"], **own, "run_id": rid}
            params = {k: v for k, v in wanted.items() if k in declared}
            target = out_dir / f"{stem}.ipynb"
            fd, tmp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, suffix=".ipynb", dir=out_dir)
            os.close(fd)
            try:
                pm.execute_notebook(str(source), tmp, parameters=params, cwd=str(root / "notebooks"),
                                    progress_bar=False, report_mode=False)
                nb = nbformat.read(tmp, as_version=4)
                nbformat.write(strip_run_metadata(nb), tmp)
                os.replace(tmp, target)
            except pm.PapermillExecutionError as err:
                if err.ename == "SweepIncomplete":
                    raise RunIncomplete(f"{stem}: {err.evalue}; {resume_hint(run_id)}", executed) from None
                if err.ename == "ValueError":  # bad input found inside the notebook: one line, not a traceback
                    raise ValueError(f"{stem}: {err.evalue}") from None
                raise
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            executed.append(target)
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return executed
