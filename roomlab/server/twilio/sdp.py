"""What the server reads from the SDK's SDP and ICE messages, and how its own offers keep the
client's numbering.

- The SDK rewrites the `a=msid` of each m-line it sends on to the id of the track it publishes
  there (`lib/util/sdp/index.js`, addOrRewriteTrackIds), and matches a subscription's id with the
  `a=msid` of the server's m-lines (`lib/util/sdp/trackmatcher.js`).
- Its SDP carries no candidates: they are trickled, in `update` messages, as RTCIceCandidateInit.
- The client offers first, so it numbers the payload types and RTP header extensions of the
  BUNDLE group. aiortc numbers every offer it makes from its own tables, and Chrome refuses an
  offer that renumbers what was negotiated ("RTP extension ID reassignment not supported"), so
  the server's offers are renumbered to the client's (`Numbering`, `renumber`). aiortc then takes
  the numbers of Chrome's answer for what it sends, so both ends agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp


def media_track_ids(sdp: str) -> dict[str, str]:
    """mid -> the track id in the `a=msid` of each audio and video m-line that has both."""
    found: dict[str, str] = {}
    for section in sdp.replace("\r\n", "\n").split("\nm=")[1:]:
        if not section.startswith(("audio", "video")):
            continue
        mid = track_id = None
        for line in section.split("\n"):
            if line.startswith("a=mid:"):
                mid = line[len("a=mid:") :].strip()
            elif line.startswith("a=msid:"):
                parts = line[len("a=msid:") :].split()
                if len(parts) == 2:
                    track_id = parts[1]
        if mid and track_id:
            found[mid] = track_id
    return found


def ice_candidate(init: Any, addresses: Iterable[str]) -> RTCIceCandidate | None:
    """An RTCIceCandidateInit from the SDK as aiortc's candidate, or None when it is malformed or on
    an address the server does not use (it answers checks from its configured addresses only)."""
    if not isinstance(init, dict) or not isinstance(init.get("candidate"), str):
        return None
    text = init["candidate"]
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    try:
        candidate = candidate_from_sdp(text)
    except (AssertionError, ValueError, IndexError):
        return None
    if candidate.ip not in set(addresses):
        return None
    mid, index = init.get("sdpMid"), init.get("sdpMLineIndex")
    candidate.sdpMid = mid if isinstance(mid, str) else None
    candidate.sdpMLineIndex = index if isinstance(index, int) and not isinstance(index, bool) else None
    if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
        return None
    return candidate


#: Dynamic payload types (RFC 3551) and one-byte header extension ids (RFC 8285) to pick from.
DYNAMIC_PAYLOAD_TYPES = tuple(range(96, 128)) + tuple(range(35, 64))
EXTENSION_IDS = tuple(range(1, 15))
#: fmtp parameters that make two codecs of one name different codecs (others are options).
IDENTIFYING_PARAMETERS = {"h264": ("profile-level-id", "packetization-mode"), "vp9": ("profile-id",)}

CodecKey = tuple[str, str, str, str]


@dataclass
class Numbering:
    """The payload types and RTP header-extension ids of one client's BUNDLE group."""

    #: codec (name, clock rate, channels, identifying fmtp) -> payload type
    payload_types: dict[CodecKey, int] = field(default_factory=dict)
    #: payload type of a codec -> payload type of its retransmissions (RTX)
    retransmissions: dict[int, int] = field(default_factory=dict)
    #: extension URI -> id
    extensions: dict[str, int] = field(default_factory=dict)

    def learn(self, sdp: str) -> None:
        """Take the numbers a client's SDP uses (the first use of a number stays)."""
        for section in _media_sections(sdp):
            codecs = _codecs(section)
            for pt, (name, key, fmtp) in codecs.items():
                if name == "rtx":
                    base = _apt(fmtp)
                    if base is not None:
                        self.retransmissions.setdefault(base, pt)
                elif pt not in self.payload_types.values():
                    self.payload_types.setdefault(key, pt)
            for line in section:
                if line.startswith("a=extmap:"):
                    number, uri = _extmap(line)
                    if number not in self.extensions.values():
                        self.extensions.setdefault(uri, number)


def renumber(sdp: str, numbering: Numbering) -> str:
    """The server's offer with the client's payload types and extension ids; a codec or extension
    the client never used gets a number it does not use (and keeps it in later offers)."""
    head, *sections = sdp.split("\r\nm=")
    out = [head]
    for text in sections:
        lines = ("m=" + text).split("\r\n")
        if lines[0].startswith(("m=audio", "m=video")):
            lines = _renumber_section(lines, numbering)
        out.append("\r\n".join(lines)[2:])
    return "\r\nm=".join(out)


def _renumber_section(lines: list[str], numbering: Numbering) -> list[str]:
    codecs = _codecs(lines)
    mapping: dict[int, int] = {}
    for pt, (name, key, _) in codecs.items():
        if name != "rtx":
            known = numbering.payload_types.get(key)
            mapping[pt] = known if known is not None else _claim(numbering, key)
    for pt, (name, _, fmtp) in codecs.items():
        base = _apt(fmtp)
        if name == "rtx" and base is not None and base in mapping:
            new_base = mapping[base]
            if new_base not in numbering.retransmissions:
                numbering.retransmissions[new_base] = _free_payload_type(numbering)
            mapping[pt] = numbering.retransmissions[new_base]
    renumbered = []
    for line in lines:
        if line.startswith("m="):
            parts = line.split(" ")
            line = " ".join(parts[:3] + [str(mapping.get(int(p), int(p))) for p in parts[3:]])
        elif line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
            attribute, rest = line.split(":", 1)
            pt, _, value = rest.partition(" ")
            if pt.isdigit():
                if attribute == "a=fmtp" and value.startswith("apt="):
                    base = int(value[4:])
                    value = f"apt={mapping.get(base, base)}"
                line = f"{attribute}:{mapping.get(int(pt), int(pt))} {value}"
        elif line.startswith("a=extmap:"):
            number, uri = _extmap(line)
            if uri not in numbering.extensions:
                used = set(numbering.extensions.values())
                numbering.extensions[uri] = next(i for i in EXTENSION_IDS if i not in used)
            line = line.replace(f"a=extmap:{number}", f"a=extmap:{numbering.extensions[uri]}", 1)
        renumbered.append(line)
    return renumbered


def _claim(numbering: Numbering, key: CodecKey) -> int:
    pt = _free_payload_type(numbering)
    numbering.payload_types[key] = pt
    return pt


def _free_payload_type(numbering: Numbering) -> int:
    used = set(numbering.payload_types.values()) | set(numbering.retransmissions.values())
    return next(pt for pt in DYNAMIC_PAYLOAD_TYPES if pt not in used)


def _media_sections(sdp: str) -> list[list[str]]:
    sections = sdp.replace("\r\n", "\n").split("\nm=")[1:]
    return [("m=" + s).split("\n") for s in sections if s.startswith(("audio", "video"))]


def _codecs(lines: list[str]) -> dict[int, tuple[str, CodecKey, str]]:
    """payload type -> (codec name, its key, its fmtp) for the rtpmap lines of one m-section."""
    fmtp: dict[int, str] = {}
    rtpmap: dict[int, str] = {}
    for line in lines:
        for prefix, found in (("a=fmtp:", fmtp), ("a=rtpmap:", rtpmap)):
            if line.startswith(prefix):
                pt, _, value = line[len(prefix) :].partition(" ")
                if pt.isdigit():
                    found[int(pt)] = value.strip()
    codecs = {}
    for pt, encoding in rtpmap.items():
        name, clock, channels = (encoding.split("/") + ["", ""])[:3]
        name = name.lower()
        params = dict(p.split("=", 1) for p in fmtp.get(pt, "").split(";") if "=" in p)
        identity = ";".join(f"{k}={params.get(k, '').lower()}" for k in IDENTIFYING_PARAMETERS.get(name, ()))
        codecs[pt] = (name, (name, clock, channels or "1", identity), fmtp.get(pt, ""))
    return codecs


def _apt(fmtp: str) -> int | None:
    for parameter in fmtp.split(";"):
        key, _, value = parameter.strip().partition("=")
        if key == "apt" and value.isdigit():
            return int(value)
    return None


def _extmap(line: str) -> tuple[int, str]:
    number, _, uri = line[len("a=extmap:") :].partition(" ")
    return int(number.split("/")[0]), uri.split(" ")[0]
