"""Networking: loopback-only ICE setup (and, later, link emulation)."""
