"""The telemetry tables (SPEC §7): one row per record, typed columns, UTC times in `time`.

Each table is a tuple of columns; a column has a name, a kind and a unit. Kinds map to pandas
dtypes: `time` -> datetime64[ns, UTC], `int` -> Int64 (nullable), `float` -> float64 (NaN when
unknown), `bool` -> boolean (nullable), `str` -> category (strings repeat: identities, SIDs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["time", "int", "float", "bool", "str"]


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    unit: str = ""
    doc: str = ""


def _t(name: str, doc: str) -> Column:
    return Column(name, "time", "UTC", doc)


MESSAGES = (
    _t("time", "when the subscriber received the message"),
    _t("sent_time", "when the publisher sent it (its clock; same machine or NTP-synced)"),
    Column("latency_ms", "float", "ms", "time - sent_time"),
    Column("room", "str", "", "room name"),
    Column("publisher", "str", "", "publisher identity (empty for messages from the server)"),
    Column("subscriber", "str", "", "receiving participant's identity"),
    Column(
        "track",
        "str",
        "",
        "data track name, or _reliable / _lossy for publish_data (suffixed :direct when sent to named identities)",
    ),
    Column("seq", "int", "", "publisher's sequence number on that track"),
    Column("size", "int", "bytes", "payload size"),
    Column("reliable", "bool", "", "sent on a reliable channel"),
    Column("topic", "str", "", "publish_data topic (empty for data tracks)"),
)

RTC_STATS = (
    _t("time", "sample time"),
    Column(
        "participant",
        "str",
        "",
        "identity of the participant the stream belongs to (the sender for outbound, the receiver for inbound)",
    ),
    Column("track", "str", "", "track SID (or the stream's id when no SID is known)"),
    Column("track_name", "str", "", "the track's name as its publisher gave it (None where unknown: Chrome dumps)"),
    Column("publisher", "str", "", "identity of the participant who published the track (None where unknown)"),
    Column("kind", "str", "", "audio or video"),
    Column("direction", "str", "", "outbound (sending) or inbound (receiving)"),
    Column("bitrate_bps", "float", "bit/s", "payload bitrate since the previous sample"),
    Column("packets", "int", "", "packets sent (outbound) or received (inbound), cumulative"),
    Column(
        "packets_lost", "int", "", "cumulative packets lost (inbound: seen here; outbound: reported by the far end)"
    ),
    Column(
        "fraction_lost",
        "float",
        "0-1",
        "fraction lost in the last interval: since the previous sample (inbound), "
        "in the far end's last report (outbound)",
    ),
    Column("jitter_ms", "float", "ms", "interarrival jitter"),
    Column("rtt_ms", "float", "ms", "round-trip time from RTCP"),
    Column("frames", "int", "", "video frames, cumulative (decoded inbound, encoded/sent outbound)"),
    Column("layer", "str", "", "video quality layer (low, standard, high) when known"),
    Column("source", "str", "", "who measured: client, server, chrome"),
)

DATA_CHANNEL_STATS = (
    _t("time", "sample time"),
    Column("participant", "str", "", "identity whose end of the channel this is"),
    Column("label", "str", "", "RTCDataChannel.label (track SID, _reliable or _lossy)"),
    Column("track_name", "str", "", "the data track's name, or _reliable / _lossy for publish_data's channels"),
    Column(
        "publisher",
        "str",
        "",
        "identity of the data track's publisher (None on publish_data's channels: they carry everyone's messages)",
    ),
    Column("protocol", "str", "", "RTCDataChannel.protocol"),
    Column("data_channel_identifier", "int", "", "SCTP stream id"),
    Column("state", "str", "", "connecting, open, closing, closed"),
    Column("messages_sent", "int", "", "cumulative"),
    Column("bytes_sent", "int", "bytes", "cumulative"),
    Column("messages_received", "int", "", "cumulative"),
    Column("bytes_received", "int", "bytes", "cumulative"),
    Column("source", "str", "", "client or server"),
)

NETWORK_QUALITY = (
    _t("time", "when the level was computed (about once a second per participant)"),
    Column("room", "str", "", "room name"),
    Column("participant", "str", "", "identity"),
    Column("level", "int", "0-5", "overall level: the minimum of the partial levels (5 without media, 0 unreachable)"),
    Column("audio_send", "int", "0-5", "partial level (None: no audio sent)"),
    Column("audio_recv", "int", "0-5", "partial level (None: no audio received)"),
    Column("video_send", "int", "0-5", "partial level (None: no video sent)"),
    Column("video_recv", "int", "0-5", "partial level (None: no video received)"),
    Column("reason", "str", "", "no media, unreachable, good, or <partial>: <limited by latency, loss, bandwidth>"),
    Column("latency_level", "int", "0-5", "worst level of delay (RTT, jitter) alone over the partials"),
    Column("loss_level", "int", "0-5", "worst level of loss alone over the partials"),
    Column("bandwidth_level", "int", "0-5", "worst level of available against required bandwidth (video only)"),
    Column("mos", "float", "1-4.5", "lowest E-model mean opinion score of delay and loss over the partials"),
    Column("send_fraction_lost", "float", "0-1", "uplink loss (the worse of audio and video) seen by the server"),
    Column("recv_fraction_lost", "float", "0-1", "downlink loss (the worse kind) from its receiver reports"),
    Column("rtt_ms", "float", "ms", "round-trip time between participant and server (from its receiver reports)"),
    Column("jitter_ms", "float", "ms", "interarrival jitter, the worst direction and kind"),
    Column("send_available_bps", "float", "bit/s", "uplink video: the REMB estimate of the server's receivers"),
    Column("send_actual_bps", "float", "bit/s", "uplink media bitrate (from the participant's sender reports)"),
    Column("send_required_bps", "float", "bit/s", "uplink video the participant needs to send (None: what it sends)"),
    Column("recv_available_bps", "float", "bit/s", "downlink video budget: the downlink estimate less audio and data"),
    Column("recv_actual_bps", "float", "bit/s", "downlink media bitrate the server sent"),
    Column("recv_required_bps", "float", "bit/s", "downlink video wanted (the subscribed tracks as they arrive)"),
    Column("send_packets", "int", "", "uplink packets expected in the sample (loss is pooled over 20 or more)"),
    Column("recv_packets", "int", "", "downlink packets covered by the receiver reports of the sample"),
)

ALLOCATIONS = (
    _t("time", "when the allocator decided (about once a second per subscriber, and on every change)"),
    Column("room", "str", "", "room name"),
    Column("subscriber", "str", "", "identity of the subscriber whose downlink is divided"),
    Column("publisher", "str", "", "identity of the track's publisher"),
    Column("track", "str", "", "subscribed video track SID"),
    Column(
        "priority",
        "str",
        "",
        "effective priority: low, standard, high (the subscriber's override, else the publisher's)",
    ),
    Column(
        "available_bps",
        "float",
        "bit/s",
        "video budget: the downlink estimate less audio and data, capped by max_subscription_bitrate",
    ),
    Column(
        "allocated_bps", "float", "bit/s", "bitrate allocated to this track (its layer's measured bitrate; 0 when off)"
    ),
    Column(
        "layer", "str", "", "layer forwarded (low, standard, high; single for a track without layers; None when off)"
    ),
    Column("switched_off", "bool", "", "track switched off"),
    Column(
        "reason",
        "str",
        "",
        "switched off: bandwidth, max_tracks, subscriber, publisher, disabled; "
        "on: optimal, render_dimensions, bandwidth, damping, probe",
    ),
    Column("mode", "str", "", "the subscriber's bandwidth profile mode: grid, collaboration, presentation"),
    Column("track_name", "str", "", "the track's name as its publisher gave it"),
    Column("desired_layer", "str", "", "the layer it would get with enough bandwidth (render dimensions allowing)"),
    Column("limited_by", "str", "", "estimate or max_subscription_bitrate, when bandwidth set the decision"),
    Column("wanted_bps", "float", "bit/s", "what all the subscriber's video tracks would take at their desired layers"),
    Column("probing", "bool", "", "a probe was under way: allocations may exceed available_bps up to probe_goal_bps"),
    Column("estimate_bps", "float", "bit/s", "the subscriber's downlink estimate for all media"),
    Column("probe_goal_bps", "float", "bit/s", "the probe's video goal while probing"),
)

EVENTS = (
    _t("time", "when it happened"),
    Column("room", "str", "", "room name"),
    Column("room_sid", "str", "", "room SID"),
    Column("event", "str", "", "room-created, participant-connected, track-added, track-subscribed, ..."),
    Column("participant", "str", "", "participant SID"),
    Column("identity", "str", "", "participant identity"),
    Column("track", "str", "", "track SID"),
    Column("code", "int", "", "Twilio error code that explains a disconnect"),
    Column("detail", "str", "", "free text"),
)

TABLES: dict[str, tuple[Column, ...]] = {
    "messages": MESSAGES,
    "rtc_stats": RTC_STATS,
    "data_channel_stats": DATA_CHANNEL_STATS,
    "network_quality": NETWORK_QUALITY,
    "allocations": ALLOCATIONS,
    "events": EVENTS,
}


def columns(table: str) -> tuple[Column, ...]:
    try:
        return TABLES[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(TABLES)}") from None
