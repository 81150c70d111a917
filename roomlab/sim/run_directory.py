"""Where `roomlab simulate` writes a run: a directory it never mixes into someone else's files.

- a directory that does not exist, or is empty, is used (created when the run is saved);
- one that holds an earlier roomlab run (its `manifest.json` says so) is refused unless
  `force=True`, which replaces that run's files only (anything else in it is left alone);
- anything else that is not empty (or is a file) is refused, with or without `force`.

The check comes before the run, so that a long run is never refused at its end; the earlier
run's files are removed only when the new one is saved, so that a failed run leaves it intact.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..telemetry.persist import MANIFEST
from ..telemetry.schema import TABLES

#: The files a run consists of, besides one Parquet file per table.
RUN_FILES = (MANIFEST, "summary.json", "report.png", "scenario.yaml")


class RunDirectoryError(ValueError):
    """An output directory `roomlab simulate` must not write into, and why."""


def earlier_run(directory: Path) -> dict[str, object] | None:
    """The manifest of the roomlab run saved in `directory`, or None."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "roomlab_version" in manifest else None


def run_files(directory: Path, manifest: dict[str, object] | None = None) -> list[Path]:
    """The files of the run in `directory`: its tables (as its manifest lists them) and the rest."""
    tables = set(TABLES)
    listed = (manifest or {}).get("tables")
    if isinstance(listed, dict):
        tables |= {str(name) for name in listed}
    names = [f"{table}.parquet" for table in sorted(tables)] + list(RUN_FILES)
    return [directory / name for name in names if (directory / name).is_file()]


def check(out: str | Path, force: bool = False) -> Path:
    """`out` if a run may be written there (see the module's rules); RunDirectoryError otherwise."""
    directory = Path(out)
    if directory.exists() and not directory.is_dir():
        raise RunDirectoryError(f"--out {directory} is a file, not a directory")
    if not directory.exists() or not any(directory.iterdir()):
        return directory
    manifest = earlier_run(directory)
    if manifest is None:
        raise RunDirectoryError(
            f"--out {directory} is not empty and holds no roomlab run; give a new or empty directory"
        )
    if not force:
        saved = manifest.get("saved", "an earlier time")
        raise RunDirectoryError(
            f"--out {directory} holds an earlier run (saved {saved}); add --force to replace it, or give another"
            " directory"
        )
    return directory


def clear(directory: Path) -> None:
    """Remove the files of the earlier run in `directory` (nothing else), before a new one is saved."""
    manifest = earlier_run(directory)
    if manifest is None:
        return
    for path in run_files(directory, manifest):
        path.unlink()
