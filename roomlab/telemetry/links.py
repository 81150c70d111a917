"""Simulated participants' emulated links, read back from the `events` table: the link a bot
joined with (`bot-joined`, its `roomlab.Link` parameters as JSON in `detail`) and every change
(`link-changed`, the changed parameters as JSON), replayed with `Link.update`'s rules (a shared
parameter sets both directions, `up_`/`down_` names one)."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: What `links()` follows per direction, and the value of a link that shapes nothing.
DIRECTION_FIELDS = {"kbps": None, "delay_ms": 0.0, "jitter_ms": 0.0, "loss": 0.0}
DIRECTIONS = ("up", "down")
COLUMNS = ("time", "identity", "event", *(f"{d}_{f}" for d in DIRECTIONS for f in DIRECTION_FIELDS), "other")
LINK_EVENTS = ("bot-joined", "link-changed")
"""A bot's link as it joined, and every change (a client's views record its link as a change)."""


def link_detail(parameters: dict[str, Any]) -> str:
    """`roomlab.Link` parameters (or changes) as an `events.detail`: JSON, a burst loss model as its
    fields, a trace or schedule named rather than copied, no seed."""
    detail: dict[str, Any] = {}
    for name, value in parameters.items():
        if name == "seed":
            continue
        if value is None or isinstance(value, int | float | str | bool):
            detail[name] = value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type) and name.endswith("burst_loss"):
            detail[name] = dataclasses.asdict(value)
        elif isinstance(value, dict):
            detail[name] = value
        else:
            detail[name] = "schedule" if isinstance(value, list) else type(value).__name__
    return json.dumps(detail, sort_keys=True)


def _parameters(detail: Any) -> dict[str, Any]:
    if not isinstance(detail, str) or not detail.startswith("{"):
        return {}
    try:
        value = json.loads(detail)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _apply(state: dict[str, dict[str, Any]], other: set[str], changes: dict[str, Any]) -> None:
    shared = {k: v for k, v in changes.items() if k in DIRECTION_FIELDS and k != "kbps"}
    for direction in DIRECTIONS:
        state[direction].update(shared)
    for key, value in changes.items():
        direction, _, name = key.partition("_")
        if direction in DIRECTIONS and name in DIRECTION_FIELDS:
            state[direction][name] = value
        elif key not in DIRECTION_FIELDS and key != "seed":
            (other.discard if value is None else other.add)(key)


def links(events: pd.DataFrame) -> pd.DataFrame:
    """Each simulated participant's link after every `bot-joined` and `link-changed` row, in time
    order: `up_kbps`/`down_kbps` (NaN: no limit), `up_delay_ms`, `up_jitter_ms`, `up_loss` (0-1)
    and the same `down_`, and `other` (other parameters set, such as burst_loss or trace).
    The last row per identity is its link now (`current()`)."""
    import pandas as pd

    if events.empty:
        return pd.DataFrame({name: pd.Series(dtype="float64") for name in COLUMNS}).astype(
            {"time": "datetime64[ns, UTC]", "identity": "str", "event": "str", "other": "str"}
        )
    rows = []
    states: dict[str, tuple[dict[str, dict[str, Any]], set[str]]] = {}
    changes = events[events["event"].isin(LINK_EVENTS)].sort_values("time", kind="stable")
    for time, identity, event, detail in changes[["time", "identity", "event", "detail"]].itertuples(index=False):
        if not isinstance(identity, str):
            continue
        if event == "bot-joined" or identity not in states:
            states[identity] = ({d: dict(DIRECTION_FIELDS) for d in DIRECTIONS}, set())
        state, other = states[identity]
        _apply(state, other, _parameters(detail))
        values = [state[d][f] for d in DIRECTIONS for f in DIRECTION_FIELDS]
        rows.append((time, identity, event, *values, ", ".join(sorted(other))))
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    numeric = [c for c in COLUMNS if c not in ("time", "identity", "event", "other")]
    frame[numeric] = frame[numeric].astype("float64")
    return frame


def current(history: pd.DataFrame) -> pd.DataFrame:
    """Each identity's link now: its last row of `links()`, indexed by identity."""
    return history.drop_duplicates("identity", keep="last").set_index("identity")


def describe(link: Any) -> str:
    """A link row of `links()` in a few words: "↑500 ↓2000 kbit/s · 40±5 ms · loss 1 %"."""

    def both(field: str, unit: str, scale: float = 1.0, digits: int = 0) -> str | None:
        up, down = link[f"up_{field}"], link[f"down_{field}"]

        def text(value: float) -> str:
            return f"{value * scale:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value * scale:.0f}"

        if up == down or (_missing(up) and _missing(down)):
            return None if _missing(up) or up == 0 else f"{text(up)}{unit}"
        return f"↑{'-' if _missing(up) else text(up)} ↓{'-' if _missing(down) else text(down)}{unit}"

    parts = []
    up_kbps, down_kbps = link["up_kbps"], link["down_kbps"]
    if not (_missing(up_kbps) and _missing(down_kbps)):
        up = "∞" if _missing(up_kbps) else f"{up_kbps:.0f}"
        down = "∞" if _missing(down_kbps) else f"{down_kbps:.0f}"
        parts.append(f"↑{up} ↓{down} kbit/s")
    delay = both("delay_ms", "")
    jitter = both("jitter_ms", "")
    if delay or jitter:
        parts.append(f"delay {delay or 0}" + (f"±{jitter}" if jitter else "") + " ms")
    loss = both("loss", " %", 100, 1)
    if loss:
        parts.append(f"loss {loss}")
    if isinstance(link.get("other"), str) and link["other"]:
        parts.append(link["other"])
    return " · ".join(parts) or "unconstrained"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
