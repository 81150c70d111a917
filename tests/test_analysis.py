"""The media analysis of `roomlab.frames`, on frames built by hand so that every number is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from roomlab import frames
from roomlab.telemetry.recorder import Table

T0 = pd.Timestamp("2026-01-01 12:00:00", tz="UTC")


def rtc_rows(rows: list[tuple]) -> pd.DataFrame:  # type: ignore[type-arg]
    """`rtc_stats` rows (with the table's dtypes) from (seconds, participant, track, track_name, publisher,
    kind, direction, packets, packets_lost, source, bitrate_bps)."""
    table = Table("rtc_stats")
    for seconds, participant, track, name, publisher, kind, direction, packets, lost, source, rate in rows:
        time = int((T0 + pd.Timedelta(seconds, "s")).value)
        table.append(
            time,
            participant,
            track,
            name,
            publisher,
            kind,
            direction,
            rate,
            packets,
            lost,
            None,
            None,
            None,
            None,
            None,
            source,
        )
    return table.frame()


def event_rows(rows: list[tuple]) -> pd.DataFrame:  # type: ignore[type-arg]
    """`events` rows from (seconds, event, identity, track, {detail} or None)."""
    table = Table("events")
    for seconds, event, identity, track, detail in rows:
        time = int((T0 + pd.Timedelta(seconds, "s")).value)
        text = json.dumps(detail) if detail is not None else None
        table.append(time, "room", "RM1", event, "PA" + identity, identity, track, None, text)
    return table.frame()


def uplink(track: str, publisher: str, counts: list[tuple[float, int, int]], kind: str = "audio") -> list[tuple]:  # type: ignore[type-arg]
    """The server's rows of what `publisher` sends: (seconds, received, lost) cumulative."""
    return [(t, publisher, track, "mic", publisher, kind, "outbound", r, lost, "server", None) for t, r, lost in counts]


def downlink(track: str, publisher: str, subscriber: str, counts: list[tuple[float, int, int]]) -> list[tuple]:  # type: ignore[type-arg]
    """The subscriber's own rows of what it receives of `track`: (seconds, received, lost) cumulative."""
    return [
        (t, subscriber, track, "mic", publisher, "audio", "inbound", r, lost, "client", None) for t, r, lost in counts
    ]


def values(frame: pd.DataFrame, column: str) -> list[float]:
    return [round(v, 6) for v in frame[column].tolist()]


def test_media_loss_is_per_interval_not_since_the_start():
    # 50 packets a second; no loss for 10 s, then 10 of every 50 lost: the step is a step
    counts = [(s, 50 * s - (10 * (s - 10) if s > 10 else 0), 10 * (s - 10) if s > 10 else 0) for s in range(21)]
    lost = frames.media_loss(rtc_rows(uplink("MT1", "bot-1", counts)), freq="1s")
    assert lost["hop"].unique().tolist() == ["uplink"]
    assert lost["time"].tolist() == [T0 + pd.Timedelta(s, "s") for s in range(20)]
    assert values(lost, "packets_expected") == [50.0] * 20
    assert values(lost, "loss_fraction") == [0.0] * 10 + [0.2] * 10
    assert (lost["publisher"] == "bot-1").all() and lost["subscriber"].isna().all()
    assert lost["track_name"].unique().tolist() == ["mic"] and lost["kind"].unique().tolist() == ["audio"]
    # what the report used to draw: the cumulative fraction, a ramp that never reaches 20 % in the run
    cumulative = [c[2] / (c[1] + c[2]) if c[1] else 0 for c in counts]
    assert cumulative[15] == pytest.approx(50 / 750) and cumulative[20] == 0.1


def test_media_loss_counts_what_a_sample_measured_where_it_was_taken_and_shares_only_a_skipped_interval():
    # samples 2 s apart: the second second had no sample of its own, so it shares the stretch with the
    # third in proportion to time (1 s and 0.5 s of the 1.5 s after the first sample's interval)
    spread = frames.media_loss(rtc_rows(uplink("MT2", "pub", [(0.5, 0, 0), (2.5, 150, 150)])), freq="1s")
    assert spread["time"].tolist() == [T0 + pd.Timedelta(1, "s"), T0 + pd.Timedelta(2, "s")]
    assert values(spread, "packets_expected") == [200.0, 100.0]
    assert values(spread, "packets_lost") == [100.0, 50.0]
    assert values(spread, "loss_fraction") == [0.5, 0.5]
    # samples half a second off the bins: each counts in the interval (start, start + 1 s] it ends in,
    # never before it; with the origin on the samples' half seconds, the same counts start there
    offset = [(0.5, 0, 0), (1.5, 50, 0), (2.5, 90, 10), (3.5, 130, 20)]
    late = frames.media_loss(rtc_rows(uplink("MT2", "pub", offset)), freq="1s")
    assert late["time"].tolist() == [T0 + pd.Timedelta(s, "s") for s in (1, 2, 3)]
    assert values(late, "loss_fraction") == [0.0, 0.2, 0.2]
    aligned = frames.media_loss(rtc_rows(uplink("MT2", "pub", offset)), origin=T0 + pd.Timedelta(0.5, "s"))
    assert aligned["time"].tolist() == [T0 + pd.Timedelta(s, "s") for s in (0.5, 1.5, 2.5)]
    assert values(aligned, "loss_fraction") == [0.0, 0.2, 0.2]
    # a packet counted lost, then arriving late, takes the count down: never a negative fraction;
    # an interval where nothing was expected has no loss fraction at all (not 0)
    late = frames.media_loss(rtc_rows(uplink("MT3", "pub", [(0, 0, 0), (1, 48, 2), (2, 51, 1), (3, 51, 1)])))
    assert values(late, "packets_lost") == [2.0, -1.0, 0.0]
    assert late["loss_fraction"].iloc[:2].tolist() == [0.04, 0.0] and np.isnan(late["loss_fraction"].iloc[2])


def test_each_hop_is_measured_by_its_receiver_and_end_to_end_combines_them():
    up = uplink("MT1", "bot-1", [(0, 0, 0), (1, 50, 0), (2, 90, 10), (3, 130, 20)])
    # the server renumbers what it forwards: the subscribers see only their own hop's gaps
    near = downlink("MT1", "bot-1", "guest-0", [(0, 0, 0), (1, 50, 0), (2, 90, 0), (3, 130, 0)])
    far = downlink("MT1", "bot-1", "guest-1", [(0, 0, 0), (1, 45, 5), (2, 81, 9), (3, 117, 13)])
    # the publisher's and the server's own views of other directions are not hops
    noise = [(1, "bot-1", "MT1", "mic", "bot-1", "audio", "outbound", 50, 40, "client", None)]
    lost = frames.media_loss(rtc_rows(up + near + far + noise))
    assert sorted(set(zip(lost["hop"], lost["subscriber"].fillna("-"), strict=True))) == [
        ("downlink", "guest-0"),
        ("downlink", "guest-1"),
        ("uplink", "-"),
    ]
    assert set(lost["publisher"]) == {"bot-1"} and set(lost["track"]) == {"MT1"}
    by_hop = {key: part for key, part in lost.groupby(lost["hop"] + "/" + lost["subscriber"].fillna("server"))}
    assert values(by_hop["uplink/server"], "loss_fraction") == [0.0, 0.2, 0.2]
    assert values(by_hop["downlink/guest-0"], "loss_fraction") == [0.0, 0.0, 0.0]
    assert values(by_hop["downlink/guest-1"], "loss_fraction") == [0.1, 0.1, 0.1]

    both = frames.end_to_end_loss(lost)
    assert list(both.columns) == [
        "time",
        "publisher",
        "subscriber",
        "track",
        "track_name",
        "kind",
        "uplink_loss",
        "downlink_loss",
        "loss_fraction",
        "packets_expected",
    ]
    guest0, guest1 = both[both["subscriber"] == "guest-0"], both[both["subscriber"] == "guest-1"]
    # guest-0 loses 20 % of bot-1's media after the first second although its own hop lost nothing
    assert values(guest0, "loss_fraction") == [0.0, 0.2, 0.2]
    assert values(guest1, "loss_fraction") == [0.1, 0.28, 0.28]  # 1 - 0.8 x 0.9
    assert values(guest1, "uplink_loss") == [0.0, 0.2, 0.2] and values(guest1, "downlink_loss") == [0.1, 0.1, 0.1]
    assert values(guest1, "packets_expected") == [50.0, 40.0, 40.0]  # the fewer of the two hops


def test_end_to_end_loss_is_unknown_where_the_uplink_is_not_measured():
    lost = frames.media_loss(rtc_rows(downlink("MT1", "pub", "sub", [(0, 0, 0), (1, 45, 5)])))
    both = frames.end_to_end_loss(lost)
    assert len(both) == 1 and np.isnan(both["loss_fraction"].iloc[0]) and both["downlink_loss"].iloc[0] == 0.1
    with pytest.raises(ValueError, match="takes the frame of media_loss"):
        frames.end_to_end_loss(rtc_rows(downlink("MT1", "pub", "sub", [(0, 0, 0)])))
    with pytest.raises(ValueError, match="freq must be a positive interval"):
        frames.media_loss(rtc_rows(downlink("MT1", "pub", "sub", [(0, 0, 0)])), freq="0s")


STANDUP_EVENTS = [
    (0.0, "participant-connected", "pub", None, None),
    (0.1, "track-added", "pub", "MTmic", {"kind": "audio", "name": "microphone", "publisher": "pub"}),
    (0.2, "track-added", "pub", "MTcam", {"kind": "video", "name": "camera-low", "publisher": "pub"}),
    (0.3, "track-added", "pub", "MTcur", {"kind": "data", "name": "cursor", "publisher": "pub"}),
    (0.4, "track-added", "mute", "MTsil", {"kind": "audio", "name": "microphone", "publisher": "mute"}),
    (1.0, "track-subscribed", "sub-a", "MTmic", {"kind": "audio", "name": "microphone", "publisher": "pub"}),
    (1.0, "track-subscribed", "sub-a", "MTcam", {"kind": "video", "name": "camera-low", "publisher": "pub"}),
    (1.0, "track-subscribed", "sub-a", "MTcur", {"kind": "data", "name": "cursor", "publisher": "pub"}),
    (1.0, "track-subscribed", "sub-a", "MTsil", {"kind": "audio", "name": "microphone", "publisher": "mute"}),
    (1.0, "track-subscribed", "chrome-user", "MTmic", {"kind": "audio", "name": "microphone", "publisher": "pub"}),
    (5.0, "track-unsubscribed", "sub-a", "MTcur", None),
    (6.0, "track-subscribed", "sub-a", "MTcur", None),
    (8.5, "track-subscribed", "late", "MTmic", {"kind": "audio", "name": "microphone", "publisher": "pub"}),
    (9.0, "participant-disconnected", "late", None, None),
    (10.0, "track-removed", "pub", "MTmic", {"kind": "audio", "name": "microphone", "publisher": "pub"}),
]


def test_tracks_and_subscriptions_come_from_events_with_their_names_and_ends():
    events = event_rows(STANDUP_EVENTS)
    published = frames.tracks(events)
    assert published[["publisher", "track", "track_name", "kind"]].values.tolist() == [
        ["pub", "MTmic", "microphone", "audio"],
        ["pub", "MTcam", "camera-low", "video"],
        ["pub", "MTcur", "cursor", "data"],
        ["mute", "MTsil", "microphone", "audio"],
    ]
    assert published["removed"].iloc[0] == T0 + pd.Timedelta(10, "s") and published["removed"].iloc[1:].isna().all()
    subscribed = frames.subscriptions(events)
    seconds = lambda t: None if pd.isna(t) else (t - T0).total_seconds()  # noqa: E731
    assert [
        (r.subscriber, r.track, r.track_name, r.publisher, seconds(r.subscribed), seconds(r.unsubscribed))
        for r in subscribed.itertuples()
    ] == [
        ("sub-a", "MTmic", "microphone", "pub", 1.0, 10.0),  # ends when the track is removed
        ("sub-a", "MTcam", "camera-low", "pub", 1.0, None),
        ("sub-a", "MTcur", "cursor", "pub", 1.0, 5.0),
        ("sub-a", "MTsil", "microphone", "mute", 1.0, None),
        ("chrome-user", "MTmic", "microphone", "pub", 1.0, 10.0),
        ("sub-a", "MTcur", "cursor", "pub", 6.0, None),  # named from its track-added row
        ("late", "MTmic", "microphone", "pub", 8.5, 9.0),  # ends when the subscriber leaves
    ]


def test_media_delivery_marks_every_subscribed_stream_that_brought_nothing():
    events = event_rows(STANDUP_EVENTS)
    stats = rtc_rows(
        uplink("MTmic", "pub", [(1, 10, 0), (2, 60, 0)])
        + uplink("MTcam", "pub", [(1, 10, 0), (2, 30, 0)], kind="video")
        + uplink("MTsil", "mute", [(1, 0, 0), (2, 0, 0)])
        + downlink("MTmic", "pub", "sub-a", [(1, 5, 0), (2, 55, 0)])
        + downlink("MTsil", "mute", "sub-a", [(1, 0, 0), (2, 0, 0)])
        + downlink("MTmic", "pub", "late", [(8.7, 0, 0), (8.9, 0, 0)])
    )
    delivery = frames.media_delivery(stats, events)
    count = lambda value: None if pd.isna(value) else int(value)  # noqa: E731
    found = [
        (r.subscriber, r.track_name, r.publisher, count(r.packets_at_server), count(r.packets_received), r.status)
        for r in delivery.itertuples()
    ]
    assert found == [  # the data track is not media; every audio and video subscription is listed
        ("sub-a", "microphone", "pub", 60, 55, "delivered"),
        ("sub-a", "camera-low", "pub", 30, 0, "missing downstream"),  # the server had it, sub-a has no row of it
        ("sub-a", "microphone", "mute", 0, 0, "missing upstream"),
        ("chrome-user", "microphone", "pub", 60, None, "not recorded"),  # no telemetry from that subscriber
        ("late", "microphone", "pub", 60, 0, "too brief"),  # half a second subscribed
    ]
    assert set(delivery["status"]) <= set(frames.DELIVERY_STATUSES)


def test_latency_per_interval_shows_the_tail_a_median_hides():
    # chat: 9 quick messages and one slow one per second; the median never shows the slow ones
    times = [T0 + pd.Timedelta(s, "s") + pd.Timedelta(ms, "ms") for s in range(3) for ms in range(0, 1000, 100)]
    latencies = [40.0] * 9 + [500.0]
    messages = pd.DataFrame({"time": times, "track": ["chat"] * 30, "latency_ms": latencies * 3})
    bands = frames.latency(messages, by=("track",), percentiles=(10, 50, 90, 99), freq="1s")
    assert list(bands.columns) == ["time", "track", "count", "mean", "p10", "p50", "p90", "p99", "max"]
    assert bands["time"].tolist() == [T0, T0 + pd.Timedelta(1, "s"), T0 + pd.Timedelta(2, "s")]
    assert bands["p50"].tolist() == [40.0] * 3 and bands["max"].tolist() == [500.0] * 3
    assert bands["p90"].tolist() == [pytest.approx(86.0)] * 3  # 40 + 0.1 x 460: the slow message shows
    assert bands["count"].tolist() == [10, 10, 10]
    with pytest.raises(ValueError, match="cannot group by"):
        frames.latency(messages, by=("subscriber",), freq="1s")


def test_bitrate_fills_a_sample_that_waited_for_the_next_report_and_nothing_after_the_last():
    # a received stream's bitrate comes with each RTCP sender report; samples between reports have none
    rates = [np.nan, 100.0, np.nan, np.nan, 300.0, np.nan]
    stats = pd.DataFrame(
        {
            "time": [T0 + pd.Timedelta(s, "s") for s in range(6)],
            "participant": ["sub"] * 6,
            "track": ["MT1"] * 6,
            "track_name": ["mic"] * 6,
            "publisher": ["pub"] * 6,
            "kind": ["audio"] * 6,
            "direction": ["inbound"] * 6,
            "source": ["client"] * 6,
            "bitrate_bps": rates,
        }
    )
    resampled = frames.bitrate(stats, freq="1s")
    assert resampled["bitrate_bps"].tolist()[:5] == [100.0, 100.0, 300.0, 300.0, 300.0]
    assert np.isnan(resampled["bitrate_bps"].iloc[5])  # after the last report: unknown
    assert resampled["publisher"].unique().tolist() == ["pub"] and resampled["kind"].unique().tolist() == ["audio"]
