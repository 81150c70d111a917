"""Runs on disk: `save(obj, path)` writes one Parquet file per table and a small JSON manifest;
`load(path)` gives back the same frames (dtypes, categories and UTC times included)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from .recorder import read_parquet
from .schema import TABLES

MANIFEST = "manifest.json"


def _frames_of(obj: Any) -> dict[str, pd.DataFrame]:
    if isinstance(obj, Mapping):
        frames = dict(obj)
    elif hasattr(obj, "frames"):
        frames = obj.frames()
    else:
        raise TypeError(
            f"save() takes a Server, Room, Simulation, Telemetry, Run or a dict of DataFrames, got {type(obj).__name__}"
        )
    for name, frame in frames.items():
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"table {name!r} is a {type(frame).__name__}, not a DataFrame")
    return frames


def save(obj: Any, path: str | Path) -> Path:
    """Write every table of `obj` to `path/<table>.parquet`, and `path/manifest.json`."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    frames = _frames_of(obj)
    times = [f["time"] for f in frames.values() if "time" in f.columns and len(f)]
    rooms: set[str] = set()
    for name in ("messages", "events"):
        if name in frames and "room" in frames[name].columns:
            rooms.update(str(r) for r in frames[name]["room"].dropna().unique())
    for name, frame in frames.items():
        frame.to_parquet(directory / f"{name}.parquet", index=False)
    from .. import __version__

    manifest = {
        "roomlab_version": __version__,
        "saved": datetime.now(UTC).isoformat(),
        "rooms": sorted(rooms),
        "time_range": [min(t.min() for t in times).isoformat(), max(t.max() for t in times).isoformat()]
        if times
        else None,
        "tables": {name: len(frame) for name, frame in frames.items()},
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return directory


class Run:
    """A saved run: its frames and manifest."""

    def __init__(self, frames: dict[str, pd.DataFrame], manifest: dict[str, Any]) -> None:
        self._frames = frames
        self.manifest = manifest

    def frame(self, name: str) -> pd.DataFrame:
        if name not in self._frames:
            raise ValueError(f"this run has no table {name!r}; it has {', '.join(self._frames)}")
        return self._frames[name]

    def frames(self) -> dict[str, pd.DataFrame]:
        return dict(self._frames)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.frame(name)

    def __repr__(self) -> str:
        tables = ", ".join(f"{n}={len(f)}" for n, f in self._frames.items())
        return f"<roomlab.Run {tables}>"


def load(path: str | Path) -> Run:
    directory = Path(path)
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"{directory} is not a saved roomlab run (no {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    frames = {}
    for name in manifest["tables"]:
        frames[name] = read_parquet(directory / f"{name}.parquet")
    known = [n for n in TABLES if n in frames] + [n for n in frames if n not in TABLES]
    return Run({n: frames[n] for n in known}, manifest)
