"""Networking: loopback ICE, link emulation, RTP taps, and roomlab's SCTP changes."""
