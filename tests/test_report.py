"""The run report, drawn from frames built by hand: what a user sees on the page, read back from the figure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from roomlab import plots
from roomlab.sim.summary import run_summary
from roomlab.telemetry.recorder import Table

T0 = pd.Timestamp("2026-01-01 12:00:00", tz="UTC")
SECONDS = 20


def at(seconds: float) -> int:
    return int((T0 + pd.Timedelta(seconds, "s")).value)


def step_run() -> dict[str, pd.DataFrame]:
    """bot-1's microphone loses nothing, then 20 % of its packets on the uplink from 10 s on; guest-0 and
    guest-1 subscribe to it and to mute's microphone, of which the server never receives anything."""
    events = Table("events")
    for seconds, event, identity, track, detail in [
        (0.0, "participant-connected", "bot-1", None, None),
        (0.0, "participant-connected", "mute", None, None),
        (0.0, "participant-connected", "guest-0", None, None),
        (0.0, "participant-connected", "guest-1", None, None),
        (0.1, "track-added", "bot-1", "MTmic", {"kind": "audio", "name": "microphone", "publisher": "bot-1"}),
        (0.1, "track-added", "mute", "MTsil", {"kind": "audio", "name": "microphone", "publisher": "mute"}),
        (0.2, "track-subscribed", "guest-0", "MTmic", {"kind": "audio", "name": "microphone", "publisher": "bot-1"}),
        (0.2, "track-subscribed", "guest-1", "MTmic", {"kind": "audio", "name": "microphone", "publisher": "bot-1"}),
        (0.2, "track-subscribed", "guest-0", "MTsil", {"kind": "audio", "name": "microphone", "publisher": "mute"}),
        (0.2, "track-subscribed", "guest-1", "MTsil", {"kind": "audio", "name": "microphone", "publisher": "mute"}),
        (10.0, "link-changed", "bot-1", None, {"loss": 0.2}),
    ]:
        events.append(at(seconds), "room", "RM1", event, None, identity, track, None, detail and json.dumps(detail))
    stats = Table("rtc_stats")
    for s in range(SECONDS + 1):
        lost = 10 * (s - 10) if s > 10 else 0
        sent = 50 * s
        row = (None, None, None, None, None)
        stats.append(at(s), "bot-1", "MTmic", "microphone", "bot-1", "audio", "outbound", 32_000.0 if s % 3 else None,
                     sent - lost, lost, *row, "server")  # fmt: skip
        stats.append(at(s), "mute", "MTsil", "microphone", "mute", "audio", "outbound", None, 0, 0, *row, "server")
        for guest in ("guest-0", "guest-1"):
            stats.append(at(s), guest, "MTmic", "microphone", "bot-1", "audio", "inbound", 30_000.0, sent - lost, 0,
                         *row, "client")  # fmt: skip
    messages = Table("messages")
    for s in range(SECONDS * 10):
        for guest in ("guest-0", "guest-1"):
            latency = 500.0 if s % 10 == 9 else 40.0
            messages.append(at(s / 10 + latency / 1000), at(s / 10), latency, "room", "bot-1", guest, "chat", s + 1,
                            10, True, None)  # fmt: skip
    return {"events": events.frame(), "rtc_stats": stats.frame(), "messages": messages.frame()}


def curves(ax) -> list[tuple[np.ndarray, np.ndarray, object]]:  # type: ignore[no-untyped-def]
    """(x, y, line) of the data lines of `ax` (not the link-change marks)."""
    found = []
    for line in ax.get_lines():
        x, y = np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)
        if x.size > 2 and not np.isnan(y).all():  # an all-NaN line is the pale part of a stream with none
            found.append((x, y, line))
    return found


def panel(figure, title_start: str):  # type: ignore[no-untyped-def]
    found = [ax for ax in figure.axes if ax.get_title().startswith(title_start)]
    assert len(found) == 1, [ax.get_title() for ax in figure.axes]
    return found[0]


def test_the_uplink_step_is_a_step_on_the_uplink_and_at_every_subscriber():
    figure = plots.report_figure(step_run(), title="step")
    uplink = panel(figure, "uplink media loss")
    bot1 = [(x, y) for x, y, _ in curves(uplink) if np.nan_to_num(y).max() > 0]
    assert len(bot1) == 1  # mute's silent microphone has no loss to draw: it is named instead
    x, y = bot1[0]
    assert y[x < 10].tolist() == [0.0] * 10 and y[(x >= 10) & (x < 20)] == pytest.approx([20.0] * 10)
    notes = " ".join(text.get_text() for text in uplink.texts)
    assert "no media from mute's microphone at the server" in notes

    # every subscriber loses 20 % of bot-1's media from 10 s, although its own downlink lost nothing
    streams = panel(figure, "end-to-end media loss")
    grid = np.asarray(streams.get_images()[0].get_array().filled(np.nan))
    labels = [label.get_text() for label in streams.get_yticklabels()]
    assert labels == [
        "bot-1's microphone → guest-0",
        "bot-1's microphone → guest-1",
        "mute's microphone → guest-0",
        "mute's microphone → guest-1",
    ]
    for row in (0, 1):
        assert grid[row, :10].tolist() == [0.0] * 10 and grid[row, 10:20] == pytest.approx([20.0] * 10)
    marked = [text.get_text() for text in streams.texts]
    assert "no media from mute's microphone at guest-0 (the server received none)" in marked
    assert "no media from mute's microphone at guest-1 (the server received none)" in marked
    downlink = panel(figure, "downlink media loss")
    assert [np.nanmax(y) for _, y, _ in curves(downlink)] == [0.0, 0.0]


def test_latency_from_zero_with_the_tail_bitrate_without_gaps_and_one_legend_for_all(tmp_path):
    frames = step_run()
    figure = plots.report_figure(frames)
    latency = panel(figure, "data-track latency")
    assert latency.get_ylim()[0] == 0
    p99 = [c for c in latency.collections if c.get_linestyle()[0][1] is not None]  # the dotted p99 marks
    assert any(np.max(segment[:, 1]) == pytest.approx(500.0, abs=1) for c in p99 for segment in c.get_segments())
    bitrate = panel(figure, "media bitrate")
    colours = plots.participant_colours(["bot-1", "guest-0", "guest-1", "mute"])
    sent = {name: y for _, y, line in curves(bitrate) for name, c in colours.items() if line.get_color() == c}
    assert sorted(sent) == ["bot-1"]  # mute's microphone never reported a rate: nothing drawn, not a line at 0
    assert not np.isnan(sent["bot-1"][:-1]).any()  # no gap where a sample waited for the next report
    assert bitrate.get_ylim()[0] == 0
    legend = figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()][:4] == ["bot-1", "guest-0", "guest-1", "mute"]
    path = plots.report(frames, tmp_path / "report.png", title="step")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_loss_cells_show_zero_and_mark_a_subscription_with_no_messages():
    frames = step_run()
    events = frames["events"]
    extra = Table("events")
    extra.append(at(0.3), "room", "RM1", "track-added", None, "bot-1", "MTcur", None,
                 json.dumps({"kind": "data", "name": "cursor", "publisher": "bot-1"}))  # fmt: skip
    extra.append(at(0.3), "room", "RM1", "track-subscribed", None, "guest-0", "MTcur", None,
                 json.dumps({"kind": "data", "name": "cursor", "publisher": "bot-1"}))  # fmt: skip
    frames["events"] = pd.concat([events, extra.frame()], ignore_index=True)
    ax = plots.loss(frames["messages"], events=frames["events"])
    cells = {text.get_text() for text in ax.texts}
    assert cells == {"0.0 %", "no messages", "-"}  # guest-0 got no cursor message; guest-1 never subscribed


def test_summary_has_loss_and_latency_per_subscriber_and_track_and_media_loss_per_hop():
    summary = run_summary(step_run(), "room", SECONDS, {"bot-1": "left"}, {"bot-1": 0.0012})
    assert summary["interrupted"] is False and summary["timer_lateness_ms"] == {"bot-1": 1.2}
    chat = {row["subscriber"]: row for row in summary["data"]}
    assert sorted(chat) == ["guest-0", "guest-1"]
    assert chat["guest-0"]["messages_sent"] == chat["guest-0"]["messages_received"] == SECONDS * 10
    assert chat["guest-0"]["loss_fraction"] == 0.0 and chat["guest-0"]["latency_p50_ms"] == 40.0
    assert chat["guest-0"]["latency_max_ms"] == 500.0  # the tail is there, not only the median
    uplink = {row["publisher"]: row for row in summary["media"]["uplink"]}
    assert uplink["bot-1"]["loss_fraction"] == 0.1 and uplink["bot-1"]["packets_expected"] == 1000.0
    assert uplink["mute"]["loss_fraction"] is None and uplink["mute"]["packets_expected"] == 0.0
    streams = {(row["publisher"], row["subscriber"]): row for row in summary["media"]["streams"]}
    assert len(streams) == 4
    for guest in ("guest-0", "guest-1"):  # their own hop lost nothing; bot-1's uplink lost 10 % overall
        heard = streams[("bot-1", guest)]
        assert (heard["uplink_loss_fraction"], heard["downlink_loss_fraction"]) == (0.1, 0.0)
        assert heard["end_to_end_loss_fraction"] == 0.1 and heard["status"] == "delivered"
        assert streams[("mute", guest)]["status"] == "missing upstream"
    json.dumps(summary, allow_nan=False)  # plain JSON: no NaN anywhere


def test_intervals_of_a_few_packets_are_drawn_pale():
    # silence: 3 packets a second, one of them lost now and then; then talk: 50 a second, 10 % lost
    stats, events = Table("rtc_stats"), Table("events")
    described = json.dumps({"kind": "audio", "name": "microphone", "publisher": "pub"})
    events.append(at(0), "room", "RM1", "track-added", None, "pub", "MT1", None, described)
    events.append(at(0), "room", "RM1", "track-subscribed", None, "sub", "MT1", None, described)
    sent = lost = 0
    for s in range(11):
        stats.append(at(s), "pub", "MT1", "microphone", "pub", "audio", "outbound", None, sent - lost, lost,
                     None, None, None, None, None, "server")  # fmt: skip
        stats.append(at(s), "sub", "MT1", "microphone", "pub", "audio", "inbound", None, sent - lost, 0,
                     None, None, None, None, None, "client")  # fmt: skip
        sent, lost = (sent + 3, lost + (s % 2)) if s < 5 else (sent + 50, lost + 5)
    figure = plots.report_figure({"rtc_stats": stats.frame(), "events": events.frame()})
    uplink = panel(figure, "uplink media loss")
    (x, firm, _), (_, pale, _) = curves(uplink)
    assert np.isnan(firm[:5]).all() and firm[5:10] == pytest.approx([10.0] * 5)
    assert pale[:5] == pytest.approx([0.0, 100 / 3, 0.0, 100 / 3, 0.0]) and np.isnan(pale[5:]).all()
    streams = panel(figure, "end-to-end media loss")
    alpha = streams.get_images()[0].get_alpha()
    assert alpha[0, :5].tolist() == [0.35] * 5 and alpha[0, 5:10].tolist() == [1.0] * 5
