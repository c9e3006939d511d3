"""Results store: tidy CSV files, one measurement per row, with a sidecar environment record.

Layout::

    <root>/<chapter>/<hardware_slug>__<run_id>.csv        one row per measurement
    <root>/<chapter>/<hardware_slug>__<run_id>.env.json   environment_record() of that run

``root`` is the repository's ``data/`` (nearest ancestor of the working directory whose
pyproject.toml names the project ``vitspeed``; else ``./data``).  Writers use ``$VITSPEED_RESULTS_DIR``
instead when it is set; readers merge both.  A file belongs to one (hardware, run id) pair, so a
run never overwrites another run's or another machine's results; opening a writer on an existing
(hardware, run id) resumes it.  Every write replaces the file atomically (temporary file in the same
folder, then ``os.replace``), so an interrupted run leaves a complete, parseable file.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import re
import tempfile
import tomllib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["ResultsWriter", "config_key", "default_root", "load_env", "list_runs", "read_csv", "read_results",
           "write_root", "check_run_id", "new_run_id", "ENV_VAR"]

ENV_VAR = "VITSPEED_RESULTS_DIR"
_CHAPTER_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,79}")


def _check_chapter(chapter: str) -> str:
    if not isinstance(chapter, str) or not _CHAPTER_RE.fullmatch(chapter):
        raise ValueError(f"chapter name {chapter!r} is not filesystem-safe; use 1-64 characters from "
                         "a-z, 0-9, '_' and '-', starting with a letter or digit")
    return chapter


def new_run_id() -> str:
    """A run id for a run started now: the UTC time, ``YYYYMMDD-HHMMSS``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is filesystem-safe (1-64 of A-Z a-z 0-9 _ -, starting with a letter or digit),
    else ``ValueError`` saying what is allowed."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r} is not filesystem-safe; use 1-64 characters from "
                         "A-Z, a-z, 0-9, '_' and '-', starting with a letter or digit")
    return run_id


def _check_slug(slug: str) -> str:
    if not isinstance(slug, str) or not _SLUG_RE.fullmatch(slug):
        raise ValueError(f"hardware id {slug!r} is not valid; it must match ^[a-z0-9-]+$ "
                         "(as made by vitspeed.envinfo.hardware_slug)")
    return slug


def default_root(start: str | os.PathLike | None = None) -> Path:
    """``data/`` of the vitspeed checkout containing ``start`` (default: cwd), else ``<start>/data``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                with pyproject.open("rb") as fh:
                    name = tomllib.load(fh).get("project", {}).get("name")
            except (OSError, tomllib.TOMLDecodeError):
                continue
            if name == "vitspeed":
                return folder / "data"
    return here / "data"


def write_root() -> Path:
    """Where writers put results: ``$VITSPEED_RESULTS_DIR`` if set, else :func:`default_root`."""
    override = os.environ.get(ENV_VAR)
    return Path(override) if override else default_root()


def _read_roots() -> list[Path]:
    # the writers' root first: a run resumed there (a part of a GPU sweep whose earlier part is also in
    # the repository's data/) is at least as far along as any other copy of it
    roots = [default_root()]
    override = os.environ.get(ENV_VAR)
    if override:
        roots.insert(0, Path(override))
    return roots


def _cell(value: Any) -> str:
    """How a value is stored in a CSV cell (and compared in resume keys): None -> '', else str()."""
    return "" if value is None else str(value)


def config_key(row: Mapping[str, Any], fields: Sequence[str]) -> tuple[str, ...]:
    """Key of a configuration: its values for ``fields`` as CSV text (None and missing -> '').

    The same for a config dict and for the row read back from a CSV, which is what makes resume work.
    """
    return tuple(_cell(row.get(f)) for f in fields)


# pandas < 3.1's default float parser can be one ulp off the value written (str(float) round-trips);
# 3.1 parses exactly with every setting and deprecates the option.
_EXACT_FLOATS = ({} if tuple(int(p) for p in pd.__version__.split(".")[:2]) >= (3, 1)
                 else {"float_precision": "round_trip"})


def read_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """``pd.read_csv`` that reads each float back exactly as the writer stored it, on every pandas."""
    return pd.read_csv(path, **_EXACT_FLOATS)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644 & ~_umask())  # mkstemp makes 0600; results are ordinary files anyone may read
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class ResultsWriter:
    """Accumulates the rows of one run on one machine and keeps its CSV file complete on disk.

    ``run_id`` defaults to the UTC start time ``YYYYmmdd-HHMMSS``.  Nothing is written before the
    first row; each :meth:`add` / :meth:`extend` rewrites the CSV atomically (columns are the union
    of all rows' keys, in order of first appearance).  If the file of this (hardware, run id)
    already exists its rows are loaded and kept, so passing the same run id resumes an interrupted
    run (use :meth:`done_keys` to skip finished configs); the sidecar env.json then keeps its
    original record and gains a ``resumed`` list of dates, and ``resumed_changes``: for each
    resumption whose environment differs from the original (another machine of the same hardware
    slug, another driver or library version), the date and each differing field as [original, now].
    """

    def __init__(self, chapter: str, env_record: Mapping[str, Any], run_id: str | None = None,
                 root: str | os.PathLike | None = None) -> None:
        from vitspeed.envinfo import hardware_slug

        self.chapter = _check_chapter(chapter)
        self.env_record = dict(env_record)
        self.hardware = _check_slug(hardware_slug(self.env_record))
        self.run_id = check_run_id(run_id or new_run_id())
        self.root = Path(root) if root is not None else write_root()
        self.folder = self.root / self.chapter
        stem = f"{self.hardware}__{self.run_id}"
        self.path = self.folder / f"{stem}.csv"
        self.env_path = self.folder / f"{stem}.env.json"
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []
        self.resumed = self.path.exists()
        if self.resumed:
            with self.path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                self.columns = list(reader.fieldnames or [])
                self.rows = [dict(r) for r in reader]
        self._env_written = False

    def done_keys(self, key_fields: Sequence[str]) -> set[tuple[str, ...]]:
        """Keys (:func:`config_key` over ``key_fields``) of the rows already recorded, OOM rows included."""
        return {config_key(row, key_fields) for row in self.rows}

    def add(self, row: Mapping[str, Any]) -> None:
        """Record one measurement and rewrite the CSV atomically."""
        self.extend([row])

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Record several measurements, then rewrite the CSV once (atomically)."""
        new = [dict(r) for r in rows]
        if not new:
            return
        for row in new:
            for key in row:
                if not isinstance(key, str):
                    raise ValueError(f"result columns must be strings, got {key!r}")
                if key not in self.columns:
                    self.columns.append(key)
        self.rows.extend(new)
        self._flush()

    def _flush(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self._env_written:
            self._write_env()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, restval="", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
        _atomic_write_text(self.path, buf.getvalue())

    def _write_env(self) -> None:
        record = dict(self.env_record)
        if self.env_path.exists():
            with self.env_path.open(encoding="utf-8") as fh:
                record = json.load(fh)
            now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            record["resumed"] = [*record.get("resumed", []), now]
            fresh = json.loads(json.dumps(self.env_record, default=str))  # as the file would hold it
            changed = {k: [record.get(k), v] for k, v in sorted(fresh.items())
                       if k != "date" and record.get(k) != v}
            if changed:
                record["resumed_changes"] = [*record.get("resumed_changes", []), {"date": now, **changed}]
        record.setdefault("hardware", self.hardware)
        record.setdefault("run_id", self.run_id)
        _atomic_write_text(self.env_path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        self._env_written = True


def _parse_name(path: Path) -> tuple[str, str] | None:
    stem = path.name[: -len(".csv")]
    if "__" not in stem:
        return None
    hardware, run_id = stem.split("__", 1)
    if not _SLUG_RE.fullmatch(hardware) or not _RUN_ID_RE.fullmatch(run_id):
        return None
    return hardware, run_id


def list_runs(chapter: str, roots: Sequence[str | os.PathLike] | None = None) -> list[dict[str, Any]]:
    """The runs stored for a chapter: dicts with hardware, run_id, path (CSV), env_path, date.

    ``roots`` default: ``$VITSPEED_RESULTS_DIR`` if set (where this process writes), then the
    repository's data/. A (hardware, run id) found under several roots is taken from the first (with
    a warning).
    ``date`` is the run's environment record date, else the CSV's modification time (UTC ISO).
    """
    _check_chapter(chapter)
    root_paths = [Path(r) for r in roots] if roots is not None else _read_roots()
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    visited: set[Path] = set()
    for root in root_paths:
        folder = (root / chapter).resolve()
        if folder in visited or not folder.is_dir():
            continue
        visited.add(folder)
        for path in sorted(folder.glob("*__*.csv")):
            parsed = _parse_name(path)
            if parsed is None:
                continue
            if parsed in seen:
                warnings.warn(f"results of {parsed[0]} run {parsed[1]} exist in several roots; "
                              f"using {seen[parsed]['path']}, ignoring {path}", stacklevel=2)
                continue
            env_path = path.with_name(path.name[: -len(".csv")] + ".env.json")
            date = None
            if env_path.is_file():
                try:
                    date = json.loads(env_path.read_text(encoding="utf-8")).get("date")
                except (OSError, json.JSONDecodeError):
                    date = None
            if not date:
                mtime = path.stat().st_mtime
                date = _dt.datetime.fromtimestamp(mtime, _dt.timezone.utc).isoformat(timespec="seconds")
            seen[parsed] = {"hardware": parsed[0], "run_id": parsed[1], "path": path,
                            "env_path": env_path if env_path.is_file() else None, "date": str(date)}
    return list(seen.values())


def read_results(chapter: str, roots: Sequence[str | os.PathLike] | None = None,
                 latest_only: bool = False) -> pd.DataFrame:
    """All rows of a chapter, every run of every machine, with added columns ``hardware`` and ``run_id``.

    ``latest_only`` keeps, per hardware, only the newest run: latest environment-record date, ties
    broken by the greater run id; a setup check (run id ending in ``smoke``, the smoke presets' tiny
    sizes) is kept only where the hardware has no other run, so checking a setup again after a real
    run does not replace its results.  Returns an empty frame (columns hardware, run_id) when there is
    none.
    """
    runs = list_runs(chapter, roots)
    if latest_only:
        def rank(run: dict[str, Any]) -> tuple[bool, str, str]:
            return (not str(run["run_id"]).endswith("smoke"), run["date"], run["run_id"])

        newest: dict[str, dict[str, Any]] = {}
        for run in runs:
            best = newest.get(run["hardware"])
            if best is None or rank(run) > rank(best):
                newest[run["hardware"]] = run
        runs = list(newest.values())
    frames = []
    for run in runs:
        try:
            frame = read_csv(run["path"])
        except pd.errors.EmptyDataError:
            continue
        frame["hardware"] = run["hardware"]
        frame["run_id"] = run["run_id"]
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["hardware", "run_id"])
    return pd.concat(frames, ignore_index=True, sort=False)


def load_env(chapter: str, hardware: str, run_id: str,
             roots: Sequence[str | os.PathLike] | None = None) -> dict[str, Any]:
    """The environment record of one run; FileNotFoundError naming the stored runs when it is absent."""
    _check_slug(hardware)
    check_run_id(run_id)
    runs = list_runs(chapter, roots)
    for run in runs:
        if run["hardware"] == hardware and run["run_id"] == run_id and run["env_path"] is not None:
            return json.loads(Path(run["env_path"]).read_text(encoding="utf-8"))
    stored = ", ".join(f"{r['hardware']}/{r['run_id']}" for r in runs) or "none"
    raise FileNotFoundError(f"no environment record for {hardware}/{run_id} in chapter {chapter!r}; "
                            f"stored runs: {stored}")
