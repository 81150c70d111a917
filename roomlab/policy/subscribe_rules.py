"""Twilio's subscribe rules: validation and the set algebra that turns rules into subscriptions.

Rules apply in order, starting from the empty set: `include` adds the tracks a rule matches,
`exclude` removes them. Filters in one rule are ANDed. A participant's own tracks never match.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import RoomError

MAX_RULES = 20
RULE_TYPES = ("include", "exclude")
FILTERS = ("all", "kind", "publisher", "track", "priority")
KINDS = ("audio", "video", "data")
PRIORITIES = ("low", "standard", "medium", "high")


@dataclass(frozen=True)
class TrackFacts:
    """What a rule can match on: a published track and its publisher."""

    track_sid: str
    track_name: str
    kind: str
    publisher_sid: str
    publisher_identity: str


def _invalid(reason: str) -> RoomError:
    return RoomError(53215, f"Invalid Subscribe Rule(s): {reason}")


def validate_subscribe_rules(rules: Any) -> list[dict[str, Any]]:
    """Check rules as Twilio does and return them normalised (every filter key present)."""
    if not isinstance(rules, list) or not rules:
        raise _invalid("Rules must be a non-empty JSON array")
    if len(rules) > MAX_RULES:
        raise _invalid(f"at most {MAX_RULES} rules are allowed, got {len(rules)}")
    normalised = []
    for index, rule in enumerate(rules):
        where = f"rule {index}"
        if not isinstance(rule, dict):
            raise _invalid(f"{where} must be a JSON object")
        unknown = set(rule) - {"type", *FILTERS}
        if unknown:
            raise _invalid(f"{where} has unknown field(s) {sorted(unknown)}; allowed: type, {', '.join(FILTERS)}")
        if rule.get("type") not in RULE_TYPES:
            raise _invalid(f"{where}: type must be one of {RULE_TYPES}")
        given = {k: v for k, v in rule.items() if k != "type" and v is not None}
        if "all" in given:
            if given["all"] is not True:
                raise _invalid(f"{where}: 'all' accepts only true")
            if len(given) > 1:
                raise _invalid(f"{where}: 'all' cannot be combined with other filters")
        if "kind" in given and given["kind"] not in KINDS:
            raise _invalid(f"{where}: kind must be one of {KINDS}")
        if "priority" in given and given["priority"] not in PRIORITIES:
            raise _invalid(f"{where}: priority must be one of {PRIORITIES}")
        for name in ("publisher", "track"):
            if name in given and (not isinstance(given[name], str) or not given[name]):
                raise _invalid(f"{where}: {name} must be a non-empty string")
        if not set(given) - {"priority"}:
            raise _invalid(f"{where} needs a filter: all, kind, publisher or track")
        normalised.append({"type": rule["type"], **{f: given.get(f) for f in FILTERS}})
    return normalised


def _matches(rule: dict[str, Any], track: TrackFacts) -> bool:
    if rule.get("all"):
        return True
    kind, publisher, name = rule.get("kind"), rule.get("publisher"), rule.get("track")
    if kind is not None and kind != track.kind:
        return False
    if publisher is not None and publisher not in (track.publisher_identity, track.publisher_sid):
        return False
    if name is not None and name not in (track.track_name, track.track_sid):
        return False
    return True


def subscribed_track_sids(rules: list[dict[str, Any]], subscriber_sid: str, tracks: Iterable[TrackFacts]) -> set[str]:
    """The SIDs of the tracks `rules` subscribe `subscriber_sid` to."""
    candidates = [t for t in tracks if t.publisher_sid != subscriber_sid]
    chosen: set[str] = set()
    for rule in rules:
        matched = {t.track_sid for t in candidates if _matches(rule, t)}
        chosen = chosen | matched if rule["type"] == "include" else chosen - matched
    return chosen
