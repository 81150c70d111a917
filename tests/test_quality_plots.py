"""plots.quality and plots.quality_inputs, and their panels in the run report, drawn from a
`network_quality` frame built by hand and read back from the figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from roomlab import plots
from roomlab.telemetry.recorder import Table
from roomlab.telemetry.schema import NETWORK_QUALITY

T0 = pd.Timestamp("2026-01-01 12:00:00", tz="UTC")


def quality_run() -> pd.DataFrame:
    """alice's uplink loses 25 % from 4 s to 8 s (her level falls to 1, then comes back); bob
    stays at 5 and receives video at half what it requires from 6 s on."""
    table = Table("network_quality")
    names = [c.name for c in NETWORK_QUALITY]
    for s in range(12):
        lossy = 4 <= s < 8
        alice = {
            "level": 1 if 5 <= s < 10 else 5,
            "audio_send": 1 if 5 <= s < 10 else 5,
            "reason": "audio_send: loss" if 5 <= s < 10 else "good",
            "send_fraction_lost": 0.25 if lossy else 0.0,
            "rtt_ms": 40.0,
            "jitter_ms": 3.0,
        }
        bob = {
            "level": 5,
            "video_recv": 5,
            "reason": "good",
            "recv_fraction_lost": 0.0,
            "rtt_ms": 20.0,
            "jitter_ms": 2.0,
            "recv_available_bps": 500e3 if s >= 6 else 1e6,
            "recv_required_bps": 1e6,
        }
        for identity, values in (("alice", alice), ("bob", bob)):
            row = {"time": int((T0 + pd.Timedelta(s, "s")).value), "room": "r", "participant": identity, **values}
            table.append(*(row.get(name) for name in names))
    return table.frame()


def lines(ax):  # type: ignore[no-untyped-def]
    return [(np.asarray(x.get_xdata(), float), np.asarray(x.get_ydata(), float), x) for x in ax.get_lines()]


def test_levels_per_participant_with_the_reason_of_each_drop():
    frame = quality_run()
    colours = plots.participant_colours(["alice", "bob"])
    ax = plots.quality(frame, colours=colours)
    drawn = {line.get_color(): y for _, y, line in lines(ax)}
    alice, bob = drawn[colours["alice"]], drawn[colours["bob"]]
    assert round(alice.min()) == 1 and round(alice.max()) == 5
    assert round(bob.min()) == round(bob.max()) == 5
    assert [t.get_text() for t in ax.texts] == ["alice: audio_send: loss"]
    assert ax.get_ylabel() == "level" and ax.get_xlabel() == "seconds"
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "5 excellent"


def test_inputs_in_their_units_with_a_style_per_direction():
    frame = quality_run()
    colours = plots.participant_colours(["alice", "bob"])
    loss = plots.quality_inputs(frame, "loss", colours=colours)
    assert loss.get_ylabel() == "lost (%)"
    sent = [y for _, y, line in lines(loss) if line.get_color() == colours["alice"] and line.get_linestyle() == "-"]
    assert np.nanmax(sent[0]) == pytest.approx(25.0)
    bandwidth = plots.quality_inputs(frame, "bandwidth", colours=colours)
    assert bandwidth.get_ylabel() == "downlink video (kbit/s)"
    available = [y for _, y, line in lines(bandwidth) if line.get_linestyle() == "-"]
    assert len(available) == 1 and np.nanmin(available[0]) == pytest.approx(500.0)  # only bob receives video
    with pytest.raises(ValueError, match="loss, latency, bandwidth"):
        plots.quality_inputs(frame, "mos")


def test_the_report_has_the_quality_panels_when_the_run_has_levels(tmp_path):
    figure = plots.report_figure({"network_quality": quality_run()})
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == [
        "network quality level per participant (reason at each drop)",
        "network quality inputs: loss per participant",
        "network quality inputs: latency per participant",
        "network quality inputs: bandwidth per participant",
    ]
    assert not plots.report_figure({"network_quality": quality_run().iloc[:0]}).axes
