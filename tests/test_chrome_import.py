"""Chrome dumps into `rtc_stats` frames: genuine dumps of a loopback call (tests/fixtures/chrome), hand-made
edge cases of both formats, and the errors a user sees for a bad file."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from roomlab.frames import read_rtcstats, read_webrtc_internals
from roomlab.telemetry.recorder import Table

FIXTURES = Path(__file__).parent / "fixtures" / "chrome"
INTERNALS = FIXTURES / "webrtc_internals_dump.gz"
RTCSTATS = FIXTURES / "rtcstats_dump.gz"
SENDER, RECEIVER = "8-1", "8-2"  # the peer connection ids Chrome gave the loopback call's two ends
POLLS = 7  # stats polls webrtc-internals made while media flowed
STREAM = ["participant", "direction", "kind", "track"]


@pytest.fixture(scope="module")
def internals() -> pd.DataFrame:
    return read_webrtc_internals(INTERNALS)


@pytest.fixture(scope="module")
def rtcstats() -> pd.DataFrame:
    return read_rtcstats(RTCSTATS)


@pytest.fixture(scope="module", params=["internals", "rtcstats"])
def frame(request: pytest.FixtureRequest) -> pd.DataFrame:
    return request.getfixturevalue(request.param)


def test_one_row_per_poll_per_stream(frame: pd.DataFrame) -> None:
    counts = frame.groupby(["participant", "direction", "kind"], observed=True).size().to_dict()
    assert counts == {
        (SENDER, "outbound", "audio"): POLLS,
        (SENDER, "outbound", "video"): POLLS,
        (RECEIVER, "inbound", "audio"): POLLS,
        (RECEIVER, "inbound", "video"): POLLS,
    }
    assert set(frame["source"]) == {"chrome"}
    assert frame["layer"].isna().all()  # no simulcast in this call


def test_dtypes_are_the_rtc_stats_schema(frame: pd.DataFrame) -> None:
    expected = Table("rtc_stats").frame().dtypes
    assert list(frame.columns) == list(expected.index)
    assert frame.dtypes.astype(str).to_dict() == expected.astype(str).to_dict()
    assert frame["track_name"].isna().all() and frame["publisher"].isna().all()  # a dump names neither


def test_times_are_utc_and_increase(frame: pd.DataFrame) -> None:
    assert str(frame["time"].dt.tz) == "UTC"
    assert frame["time"].is_monotonic_increasing
    for _, stream in frame.groupby(STREAM, observed=True):
        steps = stream["time"].diff().dropna().dt.total_seconds()
        assert steps.between(0.9, 1.1).all(), steps  # webrtc-internals polls once a second
    first = frame["time"].min()
    assert pd.Timestamp("2026-01-01", tz="UTC") < first < pd.Timestamp("2027-01-01", tz="UTC")


def test_packet_and_frame_counts_rise_per_stream(frame: pd.DataFrame) -> None:
    for key, stream in frame.groupby(STREAM, observed=True):
        packets = stream["packets"].astype("int64")
        assert (packets.diff().dropna() > 0).all(), key
        if key[2] == "video":
            frames = stream["frames"].astype("int64")
            assert (frames.diff().dropna() > 0).all(), key
        else:
            assert stream["frames"].isna().all(), key


def test_bitrates_are_plausible(frame: pd.DataFrame) -> None:
    for key, stream in frame.groupby(STREAM, observed=True):
        assert pd.isna(stream["bitrate_bps"].iloc[0]), key  # no previous sample to difference against
        rates = stream["bitrate_bps"].iloc[1:]
        assert rates.between(1e3, 5e6).all(), (key, rates.tolist())
    median = frame.groupby("kind", observed=True)["bitrate_bps"].median()
    assert 10e3 < median["audio"] < 64e3  # Opus voice
    assert median["video"] > 2 * median["audio"]


def test_sender_and_receiver_agree(frame: pd.DataFrame) -> None:
    sent = frame[frame["direction"] == "outbound"]
    received = frame[frame["direction"] == "inbound"]
    # track is the MediaStreamTrack id, the same at both ends of the call
    assert set(sent["track"]) == set(received["track"])
    assert len(set(sent["track"])) == 2
    for track, outbound in sent.groupby("track", observed=True):
        inbound = received[received["track"] == track]
        assert outbound["kind"].iloc[0] == inbound["kind"].iloc[0]
        # over loopback every packet arrives: the receiver's last count is within a poll of the sender's
        assert 0 <= int(outbound["packets"].iloc[-1]) - int(inbound["packets"].iloc[-1]) <= 60


def test_loss_jitter_and_rtt_of_a_loopback_call(frame: pd.DataFrame) -> None:
    inbound = frame[frame["direction"] == "inbound"]
    assert (inbound["packets_lost"] == 0).all()
    for key, stream in inbound.groupby(STREAM, observed=True):
        assert pd.isna(stream["fraction_lost"].iloc[0]), key  # computed from deltas: none on the first sample
        assert (stream["fraction_lost"].iloc[1:] == 0).all(), key
    outbound = frame[frame["direction"] == "outbound"]
    assert (outbound["packets_lost"].dropna() == 0).all()  # from remote-inbound-rtp, once RTCP came back
    assert outbound["packets_lost"].notna().sum() >= POLLS
    assert frame["rtt_ms"].notna().all()  # remote-inbound RTT, else the candidate pair's
    assert frame["rtt_ms"].between(0, 50).all()
    assert frame["jitter_ms"].dropna().between(0, 50).all()


def test_both_formats_give_the_same_frame(internals: pd.DataFrame, rtcstats: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(internals, rtcstats)


def test_plain_text_dumps_read_like_gzip(tmp_path: Path, internals: pd.DataFrame) -> None:
    for source in (INTERNALS, RTCSTATS):
        (tmp_path / source.stem).write_bytes(gzip.decompress(source.read_bytes()))
    pd.testing.assert_frame_equal(read_webrtc_internals(tmp_path / INTERNALS.stem), internals)
    pd.testing.assert_frame_equal(read_rtcstats(tmp_path / RTCSTATS.stem), internals)


def test_participant_names() -> None:
    named = read_webrtc_internals(INTERNALS, participant={SENDER: "alice", RECEIVER: "bob"})
    assert set(named.loc[named["direction"] == "outbound", "participant"]) == {"alice"}
    assert set(named.loc[named["direction"] == "inbound", "participant"]) == {"bob"}
    assert set(read_rtcstats(RTCSTATS, participant="me")["participant"]) == {"me"}


def _write_rtcstats(path: Path, *events: list[object], metadata: object = None) -> Path:
    header = metadata if metadata is not None else {"fileFormat": 3, "clientProtocol": "rtcstats#4.0"}
    path.write_text("\n".join(["RTCStatsDump", json.dumps(header), *(json.dumps(e) for e in events)]) + "\n")
    return path


def test_rtcstats_compressed_getstats(tmp_path: Path) -> None:
    """rtcstats-js compresses getStats: method 'g', numeric property and type keys, renumbered ids,
    per-object deltas, one top-level timestamp 't', null for removed objects."""
    t0 = 1_700_000_000_000
    first = {
        "0": {"type": 2, "10": 1234, "11": "video", "79": 100, "80": 100_000, "91": 30, "19": "1", "82": "h"},
        "1": {"type": 3, "10": 1234, "11": "video", "74": "0", "15": 2, "77": 0.01, "16": 0.004, "75": 0.05},
        "t": t0 + 1000,
    }
    second = {"0": {"79": 200, "80": 225_000, "91": 60}, "1": {"15": 5, "77": 0.02, "75": 0.06}, "t": t0 + 2000}
    path = _write_rtcstats(
        tmp_path / "compressed.rtcstats",
        ["create", "pc", {"iceServers": []}, t0],
        ["g", "pc", first, 1000],
        [1, "pc", second, 1000],
        ["g", "pc", {"0": None, "1": None, "t": t0 + 3000}, 1000],  # the streams went away
    )
    frame = read_rtcstats(path, participant="alice")
    assert len(frame) == 2
    assert frame["time"].tolist() == [
        pd.Timestamp(t0 + 1000, unit="ms", tz="UTC"),
        pd.Timestamp(t0 + 2000, unit="ms", tz="UTC"),
    ]
    assert frame["participant"].tolist() == ["alice", "alice"]
    assert frame["track"].tolist() == ["1234", "1234"]  # no trackIdentifier, no mid: the SSRC
    assert frame["direction"].tolist() == ["outbound", "outbound"]
    assert frame["bitrate_bps"].iloc[1] == pytest.approx(1_000_000.0)
    assert frame["packets"].tolist() == [100, 200]
    assert frame["packets_lost"].tolist() == [2, 5]
    assert frame["fraction_lost"].tolist() == [0.01, 0.02]
    assert frame["jitter_ms"].tolist() == pytest.approx([4.0, 4.0])  # unchanged, carried from the base report
    assert frame["rtt_ms"].tolist() == pytest.approx([50.0, 60.0])
    assert frame["frames"].tolist() == [30, 60]
    assert frame["layer"].tolist() == ["h", "h"]


def test_inbound_fraction_lost_is_computed_from_deltas(tmp_path: Path) -> None:
    t0 = 1_700_000_000_000
    stream = {"type": "inbound-rtp", "kind": "audio", "trackIdentifier": "mic", "jitter": 0.002}
    reports = [(0, 0, 0), (1000, 90, 10), (2000, 190, 10), (3000, 190, 10)]  # (ms, received, lost)
    events: list[list[object]] = [["create", "pc", {}, t0]]
    for ms, received, lost in reports:
        sample = {**stream, "packetsReceived": received, "packetsLost": lost, "bytesReceived": received * 100}
        events.append(["getStats", "pc", {"IT1": {**sample, "timestamp": t0 + ms}}, 1000 if ms else 0])
    frame = read_rtcstats(_write_rtcstats(tmp_path / "loss.rtcstats", *events))
    assert pd.isna(frame["fraction_lost"].iloc[0])  # no interval yet
    assert frame["fraction_lost"].iloc[1:3].tolist() == [0.1, 0.0]
    assert pd.isna(frame["fraction_lost"].iloc[3])  # nothing arrived in that interval
    assert frame["bitrate_bps"].iloc[1:].tolist() == [72_000.0, 80_000.0, 0.0]
    assert frame["jitter_ms"].tolist() == [2.0] * 4
    assert frame["rtt_ms"].isna().all()  # no candidate pair in this dump


def _series(values: list[object], end: str, stats_type: str) -> dict[str, object]:
    return {"startTime": end, "endTime": end, "statsType": stats_type, "values": json.dumps(values)}


def test_internals_dump_without_timestamp_series(tmp_path: Path) -> None:
    """Before Chrome M117 there was no '<id>-timestamp' series: points are taken as 1 s apart, ending at endTime."""
    end = "2023-05-01T10:00:02.000Z"
    stats = {
        "OT1-kind": _series(["audio"] * 3, end, "outbound-rtp"),
        "OT1-packetsSent": _series([50, 100, 150], end, "outbound-rtp"),
        "OT1-bytesSent": _series([4000, 8000, 12000], end, "outbound-rtp"),
        "OT1-mid": _series([0, 0, 0], end, "outbound-rtp"),
        "OT1-[bytesSent_in_bits/s]": _series([0, 32000, 32000], end, "outbound-rtp"),
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"getUserMedia": [], "PeerConnections": {"1-1": {"stats": stats}}, "UserAgent": "x"}))
    frame = read_webrtc_internals(path)
    assert frame["time"].tolist() == [pd.Timestamp(f"2023-05-01T10:00:0{s}Z") for s in range(3)]
    assert frame["bitrate_bps"].iloc[1:].tolist() == [32_000.0, 32_000.0]
    assert frame["track"].tolist() == ["0"] * 3  # the mid, as no trackIdentifier is known
    assert frame["rtt_ms"].isna().all()


def test_missing_file() -> None:
    path = FIXTURES / "no-such-dump.json"
    for reader in (read_webrtc_internals, read_rtcstats):
        with pytest.raises(ValueError, match=re.escape(str(path)) + ": cannot read the file: No such file"):
            reader(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"PeerConnections": {', "not a webrtc-internals dump: invalid JSON"),
        ("[1, 2]", "no 'PeerConnections' object at the top level"),
        ('{"getUserMedia": []}', "no 'PeerConnections' object at the top level"),
        ('{"PeerConnections": {"1-1": {"stats": []}}}', "peer connection '1-1' has no 'stats' object"),
        ('{"PeerConnections": {"1-1": {"stats": {"nodash": {}}}}}', "stats key 'nodash' is not '<statsId>-<metric>'"),
        (
            '{"PeerConnections": {"1-1": {"stats": {"OT1-bytesSent": {"endTime": 1, "values": "[1,"}}}}}',
            "peer connection '1-1': OT1-bytesSent: 'values' is not a JSON array string",
        ),
        (
            '{"PeerConnections": {"1-1": {"stats": {"OT1-bytesSent": {"endTime": "noon", "values": "[1]"}}}}}',
            "series time 'noon' is neither ISO 8601 nor epoch milliseconds",
        ),
        (
            'RTCStatsDump\n{"fileFormat": 3}\n',
            "this is an RTCStats dump, not a webrtc-internals dump; use read_rtcstats",
        ),
    ],
)
def test_bad_webrtc_internals_dump(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "dump.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(f"{path}: ") + ".*" + re.escape(message)):
        read_webrtc_internals(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"PeerConnections": {}}', "first line is not 'RTCStatsDump'; it looks like a webrtc-internals dump"),
        ("RTCStats\n", "first line is not 'RTCStatsDump'"),
        ("RTCStatsDump\n", "line 2: invalid JSON"),
        ("RTCStatsDump\n[3]\n", "line 2: the RTCStats metadata must be a JSON object"),
        ('RTCStatsDump\n{"fileFormat": 2}\n', "RTCStats fileFormat 2 is not supported (only 3)"),
        ('RTCStatsDump\n{"fileFormat": 3}\n["create", null, {}, 1]\n["getStats", "p"', "line 4: invalid JSON"),
        ('RTCStatsDump\n{"fileFormat": 3}\n["getStats", "p", {}]\n', "line 3: expected [method, peerConnectionId"),
        ('RTCStatsDump\n{"fileFormat": 3}\n["getStats", "p", [], 1]\n', "line 3: getStats value must be an object"),
        ('RTCStatsDump\n{"fileFormat": 3}\n["getStats", {}, {}, 1]\n', "line 3: getStats needs a peer connection id"),
    ],
)
def test_bad_rtcstats_dump(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "dump.rtcstats"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(f"{path}: ") + ".*" + re.escape(message)):
        read_rtcstats(path)


def test_corrupt_gzip_and_binary_files(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(INTERNALS.read_bytes()[:500])
    with pytest.raises(ValueError, match=re.escape(str(truncated)) + ": gzip data that cannot be decompressed"):
        read_webrtc_internals(truncated)
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ValueError, match=re.escape(str(binary)) + r": not a text file \(invalid UTF-8"):
        read_rtcstats(binary)
