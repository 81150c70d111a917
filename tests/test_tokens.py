"""Access tokens: minted by the server or by twilio's own AccessToken, verified with 2010x codes."""

from __future__ import annotations

import base64
import json
import time

import jwt as pyjwt
import pytest
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant, VideoGrant

from roomlab import RoomError
from roomlab.server.auth import Credentials, token_allows_room, verify_access_token

CREDS = Credentials("AC" + "a" * 32, "SK" + "b" * 32, "s" * 32)


def twilio_token(identity="alice", room=None, ttl=3600, secret=None, key=None, account=None, nbf=None, grant=True):  # type: ignore[no-untyped-def]
    token = AccessToken(
        account or CREDS.account_sid,
        key or CREDS.api_key,
        secret or CREDS.api_secret,
        identity=identity,
        ttl=ttl,
        **({"nbf": nbf} if nbf is not None else {}),
    )
    token.add_grant(VideoGrant(room=room) if grant else ChatGrant(service_sid="IS" + "0" * 32))
    return token.to_jwt()


def refusal(token: str | None) -> int:
    with pytest.raises(RoomError) as caught:
        verify_access_token(token, CREDS)
    assert caught.value.message  # a clear message goes with every code
    return caught.value.code


def test_token_minted_by_twilio_helper_is_accepted():
    access = verify_access_token(twilio_token("alice", room="standup"), CREDS)
    assert access.identity == "alice"
    assert access.room == "standup"
    assert access.expires > time.time() + 3500


def test_server_token_is_a_twilio_token(server):
    token = server.token("bob", room="daily", ttl=600)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "HS256" and header["cty"] == "twilio-fpa;v=1"
    claims = pyjwt.decode(token, server.api_secret, algorithms=["HS256"])
    assert claims["iss"] == server.api_key and claims["sub"] == server.account_sid
    assert claims["grants"] == {"identity": "bob", "video": {"room": "daily"}}
    assert 590 <= claims["exp"] - time.time() <= 600
    access = verify_access_token(token, server.credentials)
    assert (access.identity, access.room) == ("bob", "daily")


def test_server_token_argument_errors(server):
    with pytest.raises(ValueError, match="identity"):
        server.token("")
    with pytest.raises(ValueError, match="between 1 and 86400"):
        server.token("alice", ttl=86_401)


def tamper(token: str, header: dict | None = None, claims: dict | None = None) -> str:
    h, c, s = token.split(".")

    def enc(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    def dec(seg: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))

    return ".".join(
        [enc({**dec(h), **(header or {})}) if header else h, enc({**dec(c), **(claims or {})}) if claims else c, s]
    )


def test_refusal_codes():
    good = twilio_token()
    assert refusal(None) == 20101
    assert refusal("not-a-jwt") == 20101
    assert refusal("a.b") == 20101
    assert refusal("!!!." + good.split(".", 1)[1]) == 20102
    assert refusal(tamper(good, header={"cty": "something-else"})) == 20102
    assert refusal(tamper(good, header={"alg": "none"})) == 20102
    assert refusal(twilio_token(key="SK" + "c" * 32)) == 20103
    assert refusal(twilio_token(account="AC" + "d" * 32)) == 20103
    assert refusal(twilio_token(ttl=-10)) == 20104
    assert refusal(twilio_token(nbf=int(time.time()) + 600)) == 20105
    assert refusal(twilio_token(grant=False)) == 20106
    assert refusal(twilio_token(identity=None)) == 20106
    assert refusal(twilio_token(secret="x" * 32)) == 20107
    assert refusal(tamper(good, claims={"grants": {"identity": "mallory", "video": {}}})) == 20107
    assert refusal(twilio_token(ttl=2 * 86_400)) == 20157


def test_room_in_grant_must_match_room_name_or_sid():
    access = verify_access_token(twilio_token(room="standup"), CREDS)
    assert token_allows_room(access, "standup", "RM" + "1" * 32)
    assert token_allows_room(verify_access_token(twilio_token(room="RM" + "1" * 32), CREDS), "x", "RM" + "1" * 32)
    assert not token_allows_room(access, "retro", "RM" + "1" * 32)
    assert token_allows_room(verify_access_token(twilio_token(room=None), CREDS), "anything", None)
