"""`import roomlab` is what every bot worker pays at start: the analysis stack loads where it is used."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import roomlab
heavy = ("pandas", "numpy", "matplotlib", "matplotlib.pyplot", "pyarrow")
before = [name for name in heavy if name in sys.modules]
frames, plots, load = roomlab.frames, roomlab.plots, roomlab.load
plots.participant_colours(["alice"])
print(json.dumps({
    "before": before,
    "after": [name for name in heavy if name in sys.modules],
    "names": [frames.__name__, plots.__name__, load.__module__, roomlab.watch.__module__],
    "listed": all(name in dir(roomlab) for name in ("frames", "plots", "load", "save", "Run", "watch", "Watch")),
}))
"""


def test_import_roomlab_loads_no_pandas_numpy_or_matplotlib_until_used():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["before"] == []
    assert set(seen["after"]) >= {"pandas", "numpy", "matplotlib"}  # roomlab.frames and plots load them when used
    assert "matplotlib.pyplot" not in seen["after"]  # the report draws without pyplot
    assert seen["names"] == ["roomlab.frames", "roomlab.plots", "roomlab.telemetry.persist", "roomlab.telemetry.watch"]
    assert seen["listed"] is True
