"""Twilio's JavaScript SDK (twilio-video.js 2.x, unmodified) as a signaling transport: the TCMP
connection (`tcmp`), RSP version 2 messages (`rsp`), what the server reads from the SDK's SDP
(`sdp`), data-track framing at the edge (`data`), one client's session (`session`) and the
WebSocket endpoint (`endpoint`). Everything it does goes through the same rooms domain and
forwarding plane as roomlab's own signaling.
"""

from .endpoint import PATH, TwilioSignalingEndpoint

__all__ = ["PATH", "TwilioSignalingEndpoint"]
