"""How data messages cross the wire (SPEC §6): every message carries its publisher's sequence
number and send time, so any subscriber can measure latency, loss, duplicates and reordering.

One data-channel message holds one or more frames. A frame is a fixed header, optional sections
named by flags, and the payload:

    flags (u8) | seq (u32) | send time, µs since the UNIX epoch (i64) | payload length (u32)
    [topic: u16 length + UTF-8]            if flags & HAS_TOPIC
    [sender: participant SID, 34 ASCII]    if flags & HAS_SENDER
    [destinations: u8 count, then per destination u8 length + UTF-8 identity + u32 seq]
                                            if flags & HAS_DESTINATIONS
    payload

Data-track frames need only the header: the server forwards them untouched. `publish_data`
frames carry a topic, and destinations (client to server) or the sender (server to client).
"""

from __future__ import annotations

import struct
import time
from typing import NamedTuple

TEXT = 0x01
"""The payload is UTF-8 text and is handed to users as `str`."""
HAS_TOPIC = 0x02
HAS_SENDER = 0x04
HAS_DESTINATIONS = 0x08
DIRECT = 0x10
"""Sent to named identities: `seq` counts the publisher's messages to this receiver alone."""

HEADER = struct.Struct("!BIqI")
TOPIC_LENGTH = struct.Struct("!H")
DESTINATION_SEQ = struct.Struct("!I")
SID_LENGTH = 34
MAX_TOPIC_BYTES = 1024
MAX_DESTINATIONS = 255
SEQ_MODULO = 2**32


class Frame(NamedTuple):
    payload: bytes | str
    seq: int
    sent_us: int
    topic: str | None = None
    sender: str | None = None
    destinations: tuple[tuple[str, int], ...] = ()
    direct: bool = False
    size: int = 0
    """Payload size in bytes (UTF-8 bytes for text), as it crossed the wire."""


class FramingError(ValueError):
    """A data message that does not follow the framing."""


def now_us() -> int:
    return time.time_ns() // 1000


def encode(
    payload: bytes | str,
    seq: int,
    sent_us: int | None = None,
    *,
    topic: str | None = None,
    sender: str | None = None,
    destinations: tuple[tuple[str, int], ...] = (),
    direct: bool = False,
) -> bytes:
    flags = 0
    if isinstance(payload, str):
        body = payload.encode()
        flags |= TEXT
    elif isinstance(payload, bytes | bytearray | memoryview):
        body = bytes(payload)
    else:
        raise TypeError(f"payload must be str or bytes, got {type(payload).__name__}")
    sections = []
    if topic is not None:
        encoded_topic = topic.encode()
        if len(encoded_topic) > MAX_TOPIC_BYTES:
            raise ValueError(f"topic must be at most {MAX_TOPIC_BYTES} bytes of UTF-8, got {len(encoded_topic)}")
        flags |= HAS_TOPIC
        sections.append(TOPIC_LENGTH.pack(len(encoded_topic)) + encoded_topic)
    if sender is not None:
        encoded_sender = sender.encode("ascii")
        if len(encoded_sender) != SID_LENGTH:
            raise ValueError(f"sender must be a {SID_LENGTH}-character participant SID")
        flags |= HAS_SENDER
        sections.append(encoded_sender)
    if destinations:
        if len(destinations) > MAX_DESTINATIONS:
            raise ValueError(f"at most {MAX_DESTINATIONS} destination identities per message")
        flags |= HAS_DESTINATIONS
        parts = [bytes([len(destinations)])]
        for identity, destination_seq in destinations:
            encoded_identity = identity.encode()
            if not 0 < len(encoded_identity) < 256:
                raise ValueError("destination identities must be 1 to 255 bytes of UTF-8")
            parts.append(bytes([len(encoded_identity)]) + encoded_identity + DESTINATION_SEQ.pack(destination_seq))
        sections.append(b"".join(parts))
    if direct:
        flags |= DIRECT
    header = HEADER.pack(flags, seq % SEQ_MODULO, now_us() if sent_us is None else sent_us, len(body))
    return header + b"".join(sections) + body


def count(message: bytes | str) -> int:
    """How many well-formed frames one message holds, walking headers only (no payload copies);
    raises FramingError like `decode`."""
    if isinstance(message, str):
        raise FramingError("data messages are binary frames; got text")
    total = len(message)
    offset = frames = 0
    unpack = HEADER.unpack_from
    while offset < total:
        if total - offset < HEADER.size:
            raise FramingError(f"truncated frame header at byte {offset}")
        flags, _, _, length = unpack(message, offset)
        offset += HEADER.size
        if flags & (HAS_TOPIC | HAS_SENDER | HAS_DESTINATIONS):
            return len(decode(message))  # sections to walk: let the full decoder check them
        offset += length
        if offset > total:
            raise FramingError(f"frame payload of {length} bytes runs past the message end")
        frames += 1
    return frames


def decode(message: bytes | str) -> list[Frame]:
    """Every frame in one data-channel message."""
    if isinstance(message, str):
        raise FramingError("data messages are binary frames; got text")
    view = memoryview(message)
    frames = []
    offset = 0
    total = len(view)
    while offset < total:
        if total - offset < HEADER.size:
            raise FramingError(f"truncated frame header at byte {offset}")
        flags, seq, sent_us, length = HEADER.unpack_from(view, offset)
        offset += HEADER.size
        topic = sender = None
        destinations: tuple[tuple[str, int], ...] = ()
        try:
            if flags & HAS_TOPIC:
                (topic_length,) = TOPIC_LENGTH.unpack_from(view, offset)
                offset += TOPIC_LENGTH.size
                topic = bytes(view[offset : offset + topic_length]).decode()
                offset += topic_length
            if flags & HAS_SENDER:
                sender = bytes(view[offset : offset + SID_LENGTH]).decode("ascii")
                offset += SID_LENGTH
            if flags & HAS_DESTINATIONS:
                count = view[offset]
                offset += 1
                found = []
                for _ in range(count):
                    identity_length = view[offset]
                    identity = bytes(view[offset + 1 : offset + 1 + identity_length]).decode()
                    offset += 1 + identity_length
                    (destination_seq,) = DESTINATION_SEQ.unpack_from(view, offset)
                    offset += DESTINATION_SEQ.size
                    found.append((identity, destination_seq))
                destinations = tuple(found)
        except (struct.error, IndexError, UnicodeDecodeError) as exc:
            raise FramingError(f"malformed frame sections: {exc}") from None
        if offset + length > total:
            raise FramingError(f"frame payload of {length} bytes runs past the message end")
        body = bytes(view[offset : offset + length])
        offset += length
        if flags & TEXT:
            try:
                payload: bytes | str = body.decode()
            except UnicodeDecodeError:
                raise FramingError("text frame payload is not UTF-8") from None
        else:
            payload = body
        frames.append(Frame(payload, seq, sent_us, topic, sender, destinations, bool(flags & DIRECT), length))
    return frames
