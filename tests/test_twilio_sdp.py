"""What the server reads from the SDK's SDP, and how its offers keep the client's numbering: a
genuine first offer of twilio-video.js 2.36.0 in Chromium 156 (tests/fixtures/twilio) against
offers made by aiortc itself."""

from __future__ import annotations

import re
from pathlib import Path

from aiortc import RTCPeerConnection

from roomlab.net.ice import rtc_configuration
from roomlab.server.twilio.sdp import Numbering, ice_candidate, media_track_ids, renumber

CHROME_OFFER = (Path(__file__).parent / "fixtures" / "twilio" / "chrome-offer.sdp").read_bytes().decode()  # CRLF kept


def codecs(sdp: str, mid: str) -> dict[str, int]:
    """ "name/clock[;identifying fmtp]" -> payload type, for one m-line of an SDP."""
    section = next(s for s in sdp.split("\r\nm=") if f"\r\na=mid:{mid}\r\n" in s + "\r\n")
    rtpmap = dict(re.findall(r"a=rtpmap:(\d+) (\S+)", section))
    fmtp = dict(re.findall(r"a=fmtp:(\d+) (\S+)", section))
    named = {}
    for pt, encoding in rtpmap.items():
        key = encoding
        if "H264" in encoding:
            key += ";" + ";".join(p for p in fmtp[pt].split(";") if p.startswith(("profile", "packetization")))
        if encoding.startswith("rtx"):
            key += f";apt={fmtp[pt].split('=')[1]}"
        named[key] = int(pt)
    return named


def extensions(sdp: str) -> dict[str, int]:
    return {uri: int(number) for number, uri in re.findall(r"a=extmap:(\d+) (\S+)", sdp)}


async def aiortc_offer(kinds: tuple[str, ...]) -> str:
    pc = RTCPeerConnection(rtc_configuration())
    for kind in kinds:
        pc.addTransceiver(kind, direction="sendonly")
    offer = await pc.createOffer()
    await pc.close()
    return offer.sdp


def test_track_ids_come_from_each_m_lines_msid():
    ids = media_track_ids(CHROME_OFFER)
    assert set(ids) == {"0", "1"}
    assert ids["0"] == "d7036ccb-86e8-42f9-965a-5e7e706af92e"  # the microphone's publication id
    assert len(ids["1"]) == 36 and ids["1"] != ids["0"]


async def test_offers_take_the_clients_payload_types_and_extension_ids():
    numbering = Numbering()
    numbering.learn(CHROME_OFFER)
    ours = await aiortc_offer(("audio", "video", "video"))
    renumbered = renumber(ours, numbering)
    chrome_audio, chrome_video = codecs(CHROME_OFFER, "0"), codecs(CHROME_OFFER, "1")
    # every codec both sides know keeps the client's payload type, retransmissions included
    assert codecs(renumbered, "0")["opus/48000/2"] == chrome_audio["opus/48000/2"] == 111
    for mid in ("1", "2"):
        video = codecs(renumbered, mid)
        assert video["VP8/90000"] == chrome_video["VP8/90000"] == 96
        assert video["rtx/90000;apt=96"] == chrome_video["rtx/90000;apt=96"]
        h264 = [key for key in video if key.startswith("H264")]
        assert h264 and all(video[key] == chrome_video[key] for key in h264)
    # header extensions: the client's ids for the same URIs, everywhere in the BUNDLE group
    assert extensions(renumbered) == {uri: extensions(CHROME_OFFER)[uri] for uri in extensions(ours)}
    # nothing else changed: the same lines, in the same order, numbers aside
    strip = re.compile(r"\d+")
    assert [strip.sub("#", line) for line in renumbered.split("\r\n")] == [
        strip.sub("#", line) for line in ours.split("\r\n")
    ]


async def test_a_codec_the_client_never_offered_gets_a_free_number_and_keeps_it():
    numbering = Numbering()
    numbering.learn(CHROME_OFFER.replace("VP8/90000", "XYZ/90000"))  # as if the client had no VP8
    used = set(numbering.payload_types.values()) | set(numbering.retransmissions.values())
    first = codecs(renumber(await aiortc_offer(("video",)), numbering), "0")
    assert first["VP8/90000"] not in used
    assert first[f"rtx/90000;apt={first['VP8/90000']}"] not in used
    again = codecs(renumber(await aiortc_offer(("video",)), numbering), "0")
    assert again["VP8/90000"] == first["VP8/90000"]


def test_trickled_candidates_are_taken_on_the_servers_addresses_only():
    def init(address: str, **more: object) -> dict:
        text = f"candidate:2234636322 1 udp 2122194687 {address} 35340 typ host generation 0 ufrag PQOq"
        return {"candidate": text, "sdpMid": "0", "sdpMLineIndex": 0, **more}

    candidate = ice_candidate(init("127.0.0.1"), ["127.0.0.1"])
    assert candidate is not None and (candidate.ip, candidate.port, candidate.sdpMid) == ("127.0.0.1", 35340, "0")
    assert ice_candidate(init("192.0.2.2"), ["127.0.0.1"]) is None
    assert ice_candidate(init("::1"), ["127.0.0.1"]) is None
    assert ice_candidate(init("127.0.0.1", sdpMid=None, sdpMLineIndex=None), ["127.0.0.1"]) is None
    assert ice_candidate({"candidate": "candidate:garbage"}, ["127.0.0.1"]) is None
    assert ice_candidate("not an object", ["127.0.0.1"]) is None
