"""Credentials: HTTP Basic auth for the REST API, and Twilio-format access tokens for clients.

Tokens are minted with the official `twilio.jwt.access_token.AccessToken` helper, so that a token
a user mints the same way is accepted too, and verified here with Twilio's 2010x codes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VideoGrant

from ..errors import RoomError
from .model import new_sid

#: Longest lifetime a token may have (Twilio: 24 hours).
MAX_TOKEN_TTL = 86_400
CONTENT_TYPE = "twilio-fpa;v=1"


@dataclass(frozen=True)
class Credentials:
    """The account and API key a server accepts."""

    account_sid: str
    api_key: str
    api_secret: str

    @classmethod
    def generate(cls) -> Credentials:
        return cls(new_sid("AC"), new_sid("SK"), secrets.token_urlsafe(24)[:32])


@dataclass(frozen=True)
class VideoAccess:
    """What a verified token lets its bearer do."""

    identity: str
    room: str | None
    expires: float


def check_basic_auth(header: str | None, credentials: Credentials) -> str:
    """Accept `api_key:api_secret` or `account_sid:api_secret`; return the username, else 20003."""
    if not header or not header.startswith("Basic "):
        raise RoomError(20003, "Authentication Error - No credentials provided", 401)
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        username, _, password = decoded.partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise RoomError(20003, "Authentication Error - malformed Basic credentials", 401) from None
    known = hmac.compare_digest(username, credentials.api_key) or hmac.compare_digest(username, credentials.account_sid)
    if not known or not hmac.compare_digest(password, credentials.api_secret):
        raise RoomError(20003, "Authentication Error - invalid username or password", 401)
    return username


def mint_access_token(credentials: Credentials, identity: str, room: str | None = None, ttl: int = 3600) -> str:
    """A Twilio access token with a video grant for `identity` (and `room`, if given)."""
    if not identity:
        raise ValueError("identity must be a non-empty string")
    if not 0 < ttl <= MAX_TOKEN_TTL:
        raise ValueError(f"ttl must be between 1 and {MAX_TOKEN_TTL} seconds, got {ttl}")
    token = AccessToken(
        credentials.account_sid, credentials.api_key, credentials.api_secret, identity=identity, ttl=ttl
    )
    token.add_grant(VideoGrant(room=room))
    jwt = token.to_jwt()
    return jwt.decode() if isinstance(jwt, bytes) else jwt


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def verify_access_token(token: str | None, credentials: Credentials, now: float | None = None) -> VideoAccess:
    """Check a token's form, issuer, signature, lifetime and grants; raise RoomError(2010x)."""
    now = time.time() if now is None else now
    if not token or not isinstance(token, str):
        raise RoomError(20101, "Invalid Access Token: no token was given")
    parts = token.split(".")
    if len(parts) != 3:
        raise RoomError(20101, "Invalid Access Token: not a JWT (expected three dot-separated parts)")
    try:
        header = json.loads(_b64decode(parts[0]))
    except (ValueError, binascii.Error):
        raise RoomError(20102, "Invalid Access Token header: not base64url-encoded JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256" or header.get("cty") != CONTENT_TYPE:
        raise RoomError(20102, f"Invalid Access Token header: expected alg HS256 and cty {CONTENT_TYPE}")
    try:
        claims = json.loads(_b64decode(parts[1]))
        signature = _b64decode(parts[2])
    except (ValueError, binascii.Error):
        raise RoomError(20101, "Invalid Access Token: payload is not base64url-encoded JSON") from None
    if not isinstance(claims, dict):
        raise RoomError(20101, "Invalid Access Token: payload is not a JSON object")
    if claims.get("iss") != credentials.api_key or claims.get("sub") != credentials.account_sid:
        raise RoomError(20103, "Invalid Access Token issuer/subject: not this server's API key and account")
    signing_input = f"{parts[0]}.{parts[1]}".encode()
    expected = hmac.new(credentials.api_secret.encode(), signing_input, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise RoomError(20107, "Invalid Access Token signature")
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, int | float) or exp <= now:
        raise RoomError(20104, "Access Token expired or expiration date invalid")
    if exp - now > MAX_TOKEN_TTL + 60:
        raise RoomError(20157, f"Access Token expires more than {MAX_TOKEN_TTL} seconds from now")
    if nbf is not None and (not isinstance(nbf, int | float) or nbf > now):
        raise RoomError(20105, "Access Token not yet valid")
    grants = claims.get("grants")
    identity = grants.get("identity") if isinstance(grants, dict) else None
    video = grants.get("video") if isinstance(grants, dict) else None
    if not isinstance(identity, str) or not identity:
        raise RoomError(20106, "Invalid Access Token grants: no identity")
    if not isinstance(video, dict):
        raise RoomError(20106, "Invalid Access Token grants: no video grant")
    room = video.get("room")
    if room is not None and not isinstance(room, str):
        raise RoomError(20106, "Invalid Access Token grants: video.room must be a string")
    return VideoAccess(identity=identity, room=room or None, expires=float(exp))


def token_allows_room(access: VideoAccess, room_name: str, room_sid: str | None) -> bool:
    """A grant without a room allows any room; with one, it must name this room or its SID."""
    if access.room is None:
        return True
    return access.room == room_name or (room_sid is not None and access.room == room_sid)
