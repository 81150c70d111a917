"""Small drawing helpers the views share: colours per participant, seconds since the start, marks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..plots import participant_colours

__all__ = ["LINK_COLOUR", "clip", "empty", "mark_link_changes", "participant_colours", "seconds"]

#: Colour of link changes, in every view.
LINK_COLOUR = "crimson"


def seconds(times: Any, start: pd.Timestamp) -> np.ndarray:
    """Seconds from `start` (times as a Series, an Index or one Timestamp)."""
    if isinstance(times, pd.Timestamp):
        return np.asarray((times - start).total_seconds())
    return np.asarray((pd.Series(times) - start).dt.total_seconds(), dtype=float)


def empty(ax: Any, text: str) -> None:
    """Say in the axes why there is nothing to draw."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.45", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def mark_link_changes(ax: Any, changes: pd.DataFrame, start: pd.Timestamp, label: bool = True) -> None:
    """Dotted lines where a link changed, labelled with whose (rows of `links()` or `events`)."""
    for time, identity in changes[["time", "identity"]].itertuples(index=False):
        x = float(seconds(time, start))
        ax.axvline(x, color=LINK_COLOUR, linestyle=":", linewidth=1.2)
        if label:
            ax.annotate(
                f"{identity} link",
                (x, 1),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color=LINK_COLOUR,
            )


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
