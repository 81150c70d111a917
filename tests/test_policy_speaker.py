"""Dominant speaker (roomlab/policy/speaker.py) on tables of level sequences: packets as a Talker sends
them (20 ms at -20 dBov in speech, one comfort-noise packet per 400 ms at -127 dBov in silence)."""

from __future__ import annotations

import pytest

from roomlab.policy.speaker import TRACK_TIMEOUT_S, DominantSpeaker, SpeakerDecision

SPEECH = 20  # RFC 6464 as carried: -20 dBov
SILENCE = 127


def packets(key: str, talking: list[tuple[float, float]], end: float, level: int = SPEECH, start: float = 0.0):
    """(time, key, level) of one audio track from `start` to `end`: speech inside the spans, DTX outside."""
    out, ms = [], round(start * 1000)
    spans = [(round(a * 1000), round(b * 1000)) for a, b in talking]
    while ms < end * 1000:
        if any(a <= ms < b for a, b in spans):
            out.append((ms / 1000, key, level))
            ms += 20
        else:
            out.append((ms / 1000, key, SILENCE))
            ms = min([a for a, _ in spans if a > ms] + [ms + 400])
    return out


def run(streams, end: float, cadence: float = 0.2, detector: DominantSpeaker | None = None, removals=()):
    """Feed the packets in time order, decide every `cadence` seconds; return every decision."""
    detector = detector or DominantSpeaker()
    feed = sorted(p for stream in streams for p in stream)
    decisions: list[SpeakerDecision] = []
    i, step = 0, 1
    removals = sorted(removals)
    while step * cadence <= end + 1e-9:
        now = round(step * cadence, 6)
        while i < len(feed) and feed[i][0] <= now:
            detector.observe(feed[i][1], feed[i][0], feed[i][2])
            i += 1
        for at, key in removals:
            if at <= now and key in detector:
                detector.remove(key)
        decisions.append(detector.decide(now))
        step += 1
    return decisions


def changes(decisions):
    return [(d.time_s, d.dominant, d.reason) for d in decisions if d.changed]


def holder_at(decisions, time_s):
    return next(d.dominant for d in decisions if d.time_s >= time_s - 1e-9)


CADENCES = [0.1, 0.2, 0.3]


@pytest.mark.parametrize("cadence", CADENCES)
def test_nobody_talking_means_no_dominant_speaker(cadence):
    decisions = run([packets("A", [], 5), packets("B", [], 5)], 5, cadence)
    assert all(d.dominant is None and not d.changed and d.reason == "nobody" for d in decisions)


@pytest.mark.parametrize("cadence", CADENCES)
def test_a_steady_talker_takes_the_floor_and_holds_it_through_pauses(cadence):
    a = packets("A", [(1.0, 4.0), (5.0, 8.0), (9.2, 12.0)], 12)  # pauses of 1.0 s and 1.2 s
    decisions = run([a, packets("B", [], 12), packets("C", [], 12)], 12, cadence)
    (took,) = changes(decisions)
    assert took[1:] == ("A", "took-floor")
    assert 1.0 < took[0] <= 1.0 + 0.6 + cadence  # 0.55 s of speech, then the next decision
    assert all(d.dominant == "A" for d in decisions if d.time_s >= took[0])


@pytest.mark.parametrize("cadence", CADENCES)
@pytest.mark.parametrize("noise_s", [0.3, 0.5])
def test_a_short_noise_from_someone_else_during_a_pause_does_not_steal_the_floor(cadence, noise_s):
    a = packets("A", [(0.0, 4.0), (5.0, 8.0)], 8)
    b = packets("B", [(4.2, 4.2 + noise_s)], 8)  # a cough (or a "mm-hmm") in A's one-second pause
    decisions = run([a, b], 8, cadence)
    assert [c[1] for c in changes(decisions)] == ["A"]


@pytest.mark.parametrize("cadence", CADENCES)
def test_a_new_steady_talker_takes_the_floor_within_a_second(cadence):
    a = packets("A", [(0.0, 4.0)], 10)
    b = packets("B", [(4.3, 10.0)], 10)
    decisions = run([a, b], 10, cadence)
    assert [c[1:] for c in changes(decisions)] == [("A", "took-floor"), ("B", "took-floor")]
    handover = changes(decisions)[1][0]
    assert 4.3 < handover <= 4.3 + 1.0
    assert decisions[-1].dominant == "B" and decisions[-1].previous == "B"


def test_talking_over_the_speaker_does_not_flip_the_floor_while_the_speaker_goes_on():
    a = packets("A", [(0.0, 8.0)], 8)
    b = packets("B", [(3.0, 4.5)], 8)  # 1.5 s of overlap
    assert [c[1] for c in changes(run([a, b], 8))] == ["A"]


def alternating(turn_s: float, end: float):
    """A talks for 3 s, then A and B take turns of `turn_s` seconds."""
    spans = {"A": [(0.0, 3.0)], "B": []}
    t, who = 3.0, "B"
    while t < end:
        spans[who].append((t, t + turn_s))
        t, who = t + turn_s, "A" if who == "B" else "B"
    return [packets(key, spans[key], end) for key in "AB"]


def test_a_quick_exchange_leaves_the_floor_with_the_speaker():
    assert [c[1] for c in changes(run(alternating(0.4, 15), 15))] == ["A"]


@pytest.mark.parametrize("turn_s", [0.6, 0.8, 1.0])
def test_the_floor_changes_at_most_once_in_one_and_a_half_seconds(turn_s):
    times = [c[0] for c in changes(run(alternating(turn_s, 15), 15))]
    assert len(times) >= 3  # turns this long are taken up...
    assert all(b - a >= 1.5 - 1e-9 for a, b in zip(times, times[1:], strict=False))  # ...but not every one


def test_when_two_start_together_the_louder_takes_the_floor():
    loud = packets("A", [(0.0, 5.0)], 5, level=20)  # -20 dBov
    quiet = packets("B", [(0.0, 5.0)], 5, level=40)  # -40 dBov
    decisions = run([quiet, loud], 5)
    assert [c[1] for c in changes(decisions)] == ["A"]


def test_a_quiet_hum_never_takes_the_floor():
    hum = packets("A", [(0.0, 6.0)], 6, level=45)  # constant -45 dBov
    assert all(d.dominant is None for d in run([hum, packets("B", [], 6)], 6))


def test_when_the_speaker_leaves_the_floor_passes_to_someone_talking():
    a = packets("A", [(0.0, 10.0)], 10)
    b = packets("B", [(3.0, 10.0)], 10)  # talks over A, who holds the floor
    decisions = run([a, b], 10, removals=[(6.0, "A")])
    assert holder_at(decisions, 5.8) == "A"
    assert changes(decisions)[-1] == (6.0, "B", "took-floor")
    assert next(d for d in decisions if d.time_s == 6.0).previous == "A"


def test_when_the_speaker_leaves_and_nobody_talks_the_floor_is_empty():
    a = packets("A", [(0.0, 4.0)], 10)
    decisions = run([a, packets("B", [], 10)], 10, removals=[(5.0, "A")])
    assert changes(decisions) == [(0.6, "A", "took-floor"), (5.0, None, "removed")]
    assert holder_at(decisions, 9.0) is None


def test_a_track_that_stops_sending_loses_the_floor():
    a = packets("A", [(0.0, 3.0)], 3)  # then nothing at all, not even DTX
    decisions = run([a, packets("B", [], 8)], 8)
    stop = changes(decisions)[-1]
    assert stop[1:] == (None, "stopped")
    assert 3.0 + TRACK_TIMEOUT_S <= stop[0] <= 3.0 + TRACK_TIMEOUT_S + 0.2


def test_activity_tells_frequent_speakers_from_occasional_ones():
    detector = DominantSpeaker()
    often = packets("A", [(0.0, 3.0), (3.5, 6.5), (7.0, 10.0)], 10)
    rarely = packets("B", [(4.0, 4.8)], 10)
    run([often, rarely, packets("C", [], 10)], 10, detector=detector)
    a, b, c = (detector.activity(key) for key in "ABC")
    assert a.long > 0.5 > b.long > c.long == 0.0
    assert a.speaking and not b.speaking and not c.speaking
    assert a.short > 0.9 and a.medium > 0.9
    assert detector.activity("nobody") is None
    assert set(detector.activities()) == {"A", "B", "C"}
    later = detector.activity("A", 10.0 + TRACK_TIMEOUT_S + 0.1)
    assert later.stopped and not detector.activity("A").stopped


def test_decisions_at_the_same_time_change_nothing():
    detector = DominantSpeaker()
    run([packets("A", [(0.0, 2.0)], 2)], 2, detector=detector)
    before = detector.activity("A")
    again = detector.decide(2.0)
    assert (again.dominant, again.changed, again.reason) == ("A", False, "held")
    assert detector.activity("A") == before


def test_long_activity_remembers_the_last_few_seconds_for_the_allocator():
    detector = DominantSpeaker()
    run([packets("A", [(0.0, 6.0)], 8)], 8, detector=detector)
    activity = detector.activity("A")
    assert not activity.speaking and activity.medium < 0.05  # stopped talking 2 s ago...
    assert activity.long > 0.3  # ...but is still one of the recent speakers
