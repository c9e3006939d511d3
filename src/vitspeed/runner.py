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
           "RunIncomplete"]


class RunIncomplete(RuntimeError):
    """The time budget ran out before every notebook finished; ``executed`` lists those that did."""

    def __init__(self, message: str, executed: list[Path]) -> None:
        super().__init__(message)
        self.executed = executed


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
    data = yaml.safe_load(path.read_text()) or {}
    data.setdefault("parameters", {})
    data.setdefault("notebooks", {})
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


def strip_run_metadata(nb: Any) -> Any:
    """Remove papermill's timing/status metadata from a notebook object (in place, returned).

    A parameters cell the book hides (tag ``remove-cell``) hides papermill's injected cell too.
    """
    nb.metadata.pop("papermill", None)
    hide = any("parameters" in c.metadata.get("tags", []) and "remove-cell" in c.metadata.get("tags", [])
               for c in nb.cells)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        tags = cell.metadata.get("tags", [])
        if hide and "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
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


def run_notebooks(names: Iterable[str] | None = None, preset: str = "cpu", output_dir: str | Path | None = None,
                  root: Path | None = None, time_budget_s: float | None = None) -> list[Path]:
    """Execute notebooks (all by default) with ``preset``; return the executed notebooks' paths.

    ``time_budget_s`` (seconds from now): no sweep configuration starts after it, and
    :class:`RunIncomplete` is raised if a notebook could not finish (run again to resume).
    """
    import nbformat
    import papermill as pm

    from vitspeed.timing import DEADLINE_ENV

    root = root or repo_root()
    config = load_preset(preset, root)
    stems = _resolve(names, root)
    if time_budget_s is not None and not time_budget_s >= 0:
        raise ValueError(f"time budget must be a number of seconds >= 0; got {time_budget_s}")
    deadline = None if time_budget_s is None else time.time() + float(time_budget_s)
    out_dir = Path(output_dir) if output_dir else root / "book" / "chapters"
    out_dir.mkdir(parents=True, exist_ok=True)
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
                raise RunIncomplete(f"time budget of {time_budget_s:g} s reached before {stem}; run the same "
                                    "command again to resume", executed)
            source = root / "notebooks" / f"{stem}.ipynb"
            declared = pm.inspect_notebook(str(source))
            wanted = {**config["parameters"], **(config["notebooks"].get(stem) or {})}
            params = {k: v for k, v in wanted.items() if k in declared}
            target = out_dir / f"{stem}.ipynb"
            fd, tmp = tempfile.mkstemp(suffix=".ipynb", dir=out_dir)
            os.close(fd)
            try:
                pm.execute_notebook(str(source), tmp, parameters=params, cwd=str(root / "notebooks"),
                                    progress_bar=False, report_mode=False)
                nb = nbformat.read(tmp, as_version=4)
                nbformat.write(strip_run_metadata(nb), tmp)
                os.replace(tmp, target)
            except pm.PapermillExecutionError as err:
                if err.ename == "SweepIncomplete":
                    raise RunIncomplete(f"{stem}: {err.evalue}", executed) from None
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
