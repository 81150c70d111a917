"""Network Quality levels (roomlab/policy/quality.py): tables of inputs, damping over sequences,
monotonicity over grids, and Twilio's stats shapes at each verbosity."""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace

import pytest

from roomlab.policy.quality import (
    RISE_WINDOW,
    MediaMeasurement,
    NetworkQualityConfiguration,
    NetworkQualityMeter,
    ParticipantMeasurement,
    network_quality_stats,
    parse_verbosity,
    score,
    score_partial,
)

CLEAN = MediaMeasurement(fraction_lost=0.0, rtt_s=0.08, jitter_s=0.005, packets=50)


def audio_sender(**changes) -> ParticipantMeasurement:
    values = {"fraction_lost": 0.0, "rtt_s": 0.08, "jitter_s": 0.005, "packets": 50, **changes}
    return ParticipantMeasurement(audio_send=MediaMeasurement(**values))


def levels_over(meter: NetworkQualityMeter, samples) -> list[int]:
    return [meter.update(sample).level for sample in samples]


# --- one sample ------------------------------------------------------------------------------------


def test_without_media_the_level_is_5_and_no_partial_is_reported():
    levels = score(ParticipantMeasurement())
    assert (levels.level, levels.reason) == (5, "no media")
    assert (levels.audio_send, levels.audio_recv, levels.video_send, levels.video_recv) == (None,) * 4
    assert NetworkQualityMeter().update(ParticipantMeasurement()).level == 5


def test_an_unreachable_participant_is_at_0_with_its_flowing_partials():
    levels = score(ParticipantMeasurement(audio_send=CLEAN, video_recv=CLEAN, reachable=False))
    assert (levels.level, levels.audio_send, levels.video_recv, levels.audio_recv) == (0, 0, 0, None)
    assert levels.reason == "unreachable"


def test_clean_audio_both_ways_is_5():
    levels = score(ParticipantMeasurement(audio_send=CLEAN, audio_recv=CLEAN))
    assert (levels.level, levels.audio_send, levels.audio_recv, levels.video_send) == (5, 5, 5, None)
    assert levels.partials["audio_send"].limited_by == "none"
    assert levels.partials["audio_send"].bandwidth is None  # bandwidth is not used for audio


@pytest.mark.parametrize(
    ("loss", "audio", "video"),
    [(0.0, 5, 5), (0.01, 5, 5), (0.02, 5, 4), (0.03, 4, 4), (0.05, 3, 3), (0.10, 2, 2), (0.15, 1, 1), (0.25, 1, 1)],
)
def test_loss_levels_follow_the_e_model_with_video_loss_weighted_up(loss, audio, video):
    m = MediaMeasurement(fraction_lost=loss, rtt_s=0.08, jitter_s=0.005)
    assert score_partial("audio", m).level == audio
    assert score_partial("video", m).level == video
    assert score_partial("audio", m).fraction_lost >= audio  # 80 ms of RTT costs a little too
    if audio < 5:
        assert score_partial("audio", m).limited_by == "loss"


@pytest.mark.parametrize(("rtt", "level"), [(0.02, 5), (0.08, 5), (0.2, 4), (0.3, 3), (0.38, 2), (0.5, 1), (1.2, 1)])
def test_delay_levels_match_twilio_preflight_thresholds(rtt, level):
    # Twilio preflight: L = rtt + 2 jitter + 10 ms; R = 94.768 - L/40 (or -(L-120)/10 beyond 160 ms)
    partial = score_partial("audio", MediaMeasurement(fraction_lost=0.0, rtt_s=rtt, jitter_s=0.005))
    assert partial.latency == level
    assert partial.level == level
    assert partial.limited_by == ("none" if level == 5 else "latency")


def test_150_ms_of_added_one_way_delay_lowers_the_latency_part():
    before = score(audio_sender(rtt_s=0.08))
    after = score(audio_sender(rtt_s=0.08 + 0.300))
    assert before.latency_level == 5
    assert after.latency_level <= 3
    assert after.level < before.level
    assert after.reason == "audio_send: latency"


def test_delay_and_loss_together_cost_more_than_either_alone():
    partial = score_partial("audio", MediaMeasurement(fraction_lost=0.02, rtt_s=0.2, jitter_s=0.005))
    assert (partial.latency, partial.fraction_lost) == (4, 5)
    assert partial.level == 3
    assert partial.limited_by == "latency+loss"


def test_video_received_below_what_it_requires_gets_a_low_recv_level():
    # three cameras wanting 1.2 Mbit/s each behind a 400 kbit/s downlink
    starved = MediaMeasurement(
        fraction_lost=0.0, rtt_s=0.08, jitter_s=0.005, actual_bps=340e3, available_bps=400e3, required_bps=3.6e6
    )
    levels = score(ParticipantMeasurement(audio_recv=CLEAN, video_recv=starved))
    assert levels.video_recv <= 2
    assert levels.partials["video_recv"].limited_by == "bandwidth"
    assert levels.audio_recv == 5
    assert levels.level == levels.video_recv
    assert levels.reason == "video_recv: bandwidth"


def test_video_switched_off_for_bandwidth_caps_the_video_recv_level_at_2_even_with_no_video_flowing():
    # a subscriber gets one camera of two: the budget fits what flows, the other is switched off
    half = replace(CLEAN, actual_bps=170e3, available_bps=300e3, required_bps=340e3)
    assert score_partial("video", half).bandwidth == 5
    starved = score_partial("video", replace(half, switched_off_bps=170e3))
    assert (starved.level, starved.bandwidth, starved.limited_by) == (2, 2, "bandwidth")
    # nothing flows: no packets, the estimate's budget against what is wanted
    none_flows = MediaMeasurement(
        fraction_lost=0.0,
        rtt_s=0.08,
        packets=0,
        actual_bps=0.0,
        available_bps=120e3,
        required_bps=170e3,
        switched_off_bps=170e3,
    )
    levels = score(ParticipantMeasurement(audio_recv=CLEAN, video_recv=none_flows))
    assert (levels.level, levels.reason) == (2, "video_recv: bandwidth")
    # the cap never raises a level the ratio sets lower
    assert score_partial("video", replace(none_flows, available_bps=5e3)).bandwidth == 1
    assert score_partial("video", MediaMeasurement(switched_off_bps=170e3)).bandwidth == 2


@pytest.mark.parametrize(
    ("available", "required", "level"),
    [(3.6e6, 3.6e6, 5), (3.0e6, 3.6e6, 5), (1.8e6, 3.6e6, 4), (0.6e6, 3.6e6, 3), (0.2e6, 3.6e6, 2), (0.1e6, 3.6e6, 1)],
)
def test_bandwidth_loses_a_level_per_halving(available, required, level):
    m = MediaMeasurement(available_bps=available, required_bps=required)
    assert score_partial("video", m).bandwidth == level


def test_bandwidth_is_unscored_when_neither_an_estimate_nor_a_requirement_is_known():
    assert score_partial("video", MediaMeasurement(actual_bps=500e3)).bandwidth is None
    assert score_partial("video", MediaMeasurement(actual_bps=500e3, available_bps=250e3)).bandwidth == 4


def test_bandwidth_is_unscored_without_an_estimate_whatever_the_publisher_sends_this_second():
    # on the estimator's prior: a camera averaging 180 kbit/s sent 120 in a second between keyframes
    between_keyframes = MediaMeasurement(fraction_lost=0.0, rtt_s=0.04, actual_bps=120e3, required_bps=180e3)
    assert score_partial("video", between_keyframes).bandwidth is None
    assert score_partial("video", between_keyframes).level == 5
    # the estimate's budget, once known, is what counts
    assert score_partial("video", replace(between_keyframes, available_bps=60e3)).bandwidth == 3


def test_inputs_outside_their_range_are_value_errors():
    with pytest.raises(ValueError, match="fraction_lost"):
        MediaMeasurement(fraction_lost=1.5)
    with pytest.raises(ValueError, match="rtt_s"):
        MediaMeasurement(rtt_s=-0.1)
    with pytest.raises(ValueError, match="audio_send, audio_recv, video_send, video_recv"):
        ParticipantMeasurement().partial("audio_up")


# --- monotonicity -----------------------------------------------------------------------------------

LOSSES = (0.0, 0.01, 0.03, 0.06, 0.1, 0.2, 0.4)
RTTS = (0.0, 0.05, 0.15, 0.3, 0.6, 1.0)
JITTERS = (0.0, 0.01, 0.03, 0.1)
AVAILABLE = (0.0, 1e5, 4e5, 1e6, 3e6)
SWITCHED_OFF = (None, 5e5)


def grid():
    return itertools.product(LOSSES, RTTS, JITTERS, AVAILABLE, SWITCHED_OFF)


def measurement(loss, rtt, jitter, available, switched_off):
    return MediaMeasurement(
        fraction_lost=loss,
        rtt_s=rtt,
        jitter_s=jitter,
        available_bps=available,
        required_bps=2e6,
        actual_bps=1e6,
        switched_off_bps=switched_off,
    )


def worse_neighbours(loss, rtt, jitter, available, switched_off):
    """The same point with one input one step worse."""
    for values, index in ((LOSSES, 0), (RTTS, 1), (JITTERS, 2), (SWITCHED_OFF, 4)):
        point = [loss, rtt, jitter, available, switched_off]
        i = values.index(point[index])
        if i + 1 < len(values):
            point[index] = values[i + 1]
            yield tuple(point)
    i = AVAILABLE.index(available)
    if i > 0:
        yield (loss, rtt, jitter, AVAILABLE[i - 1], switched_off)


@pytest.mark.parametrize("kind", ["audio", "video"])
def test_worse_input_never_raises_any_level_of_one_sample(kind):
    checked = 0
    for point in grid():
        better = score_partial(kind, measurement(*point))
        for worse_point in worse_neighbours(*point):
            worse = score_partial(kind, measurement(*worse_point))
            assert worse.level <= better.level, (point, worse_point)
            assert worse.latency <= better.latency and worse.fraction_lost <= better.fraction_lost
            if kind == "video":
                assert worse.bandwidth <= better.bandwidth
            checked += 1
    assert checked > 1000


def meters_in_various_states() -> list[NetworkQualityMeter]:
    """A fresh meter, one that has seen bad seconds, one recovering, one that saw a single bad second."""
    histories = [
        [],
        [audio_sender(fraction_lost=0.25)] * 3,
        [audio_sender(fraction_lost=0.25)] * 3 + [audio_sender()] * 2,
        [audio_sender()] * 3 + [audio_sender(rtt_s=0.6)],
    ]
    meters = []
    for history in histories:
        meter = NetworkQualityMeter()
        levels_over(meter, history)
        meters.append(meter)
    return meters


def test_worse_input_never_raises_the_damped_level_whatever_the_history():
    checked = 0
    for meter in meters_in_various_states():
        for point in itertools.product(LOSSES, RTTS, JITTERS):
            better = copy.deepcopy(meter).update(
                audio_sender(fraction_lost=point[0], rtt_s=point[1], jitter_s=point[2])
            )
            for worse_point in worse_neighbours(*point, AVAILABLE[0], SWITCHED_OFF[-1]):
                worse_sample = audio_sender(fraction_lost=worse_point[0], rtt_s=worse_point[1], jitter_s=worse_point[2])
                worse = copy.deepcopy(meter).update(worse_sample)
                assert worse.level <= better.level, (point, worse_point)
                checked += 1
    assert checked > 1000


# --- damping ----------------------------------------------------------------------------------------------


def test_25_percent_uplink_loss_on_audio_drops_to_2_or_below_after_two_seconds_and_recovers_in_four():
    meter = NetworkQualityMeter()
    clean, lossy = audio_sender(), audio_sender(fraction_lost=0.25)
    assert levels_over(meter, [clean] * 5) == [5] * 5
    during = levels_over(meter, [lossy] * 10)
    assert during[0] == 5  # one bad second moves nothing
    assert all(level <= 2 for level in during[1:])
    assert meter.levels.reason == "audio_send: loss"
    after = levels_over(meter, [clean] * 6)
    assert all(level <= 2 for level in after[: RISE_WINDOW - 1])  # slower than one sample
    assert after[RISE_WINDOW - 1] >= 4  # about 4 s at one sample a second
    assert after[-1] == 5


def test_a_single_bad_second_never_moves_the_level():
    meter = NetworkQualityMeter()
    sequence = [audio_sender()] * 4 + [audio_sender(fraction_lost=0.4)] + [audio_sender()] * 4
    assert levels_over(meter, sequence) == [5] * 9


def test_bad_seconds_two_out_of_three_drop_the_level():
    meter = NetworkQualityMeter()
    bad, good = audio_sender(fraction_lost=0.25), audio_sender()
    levels = levels_over(meter, [good, bad, good, bad, good, bad])
    assert levels[:3] == [5, 5, 5]
    assert levels[3] <= 2


def test_recovery_waits_for_four_good_seconds_in_a_row():
    meter = NetworkQualityMeter()
    bad, good = audio_sender(fraction_lost=0.25), audio_sender()
    levels_over(meter, [bad] * 3)
    levels = levels_over(meter, [good, good, good, bad, good, good, good, good])
    assert levels[:7] == [1] * 7  # the bad second restarts the count
    assert levels[7] == 5


def test_unreachable_is_0_at_once_and_recovers_by_the_rising_rule():
    meter = NetworkQualityMeter()
    levels_over(meter, [audio_sender()] * 3)
    gone = ParticipantMeasurement(audio_send=CLEAN, reachable=False)
    assert meter.update(gone).level == 0
    back = levels_over(meter, [audio_sender()] * RISE_WINDOW)
    assert back[:-1] == [0] * (RISE_WINDOW - 1)
    assert back[-1] == 5


def test_a_partial_that_stops_flowing_is_forgotten_and_starts_again_at_5():
    meter = NetworkQualityMeter()
    levels_over(meter, [audio_sender(fraction_lost=0.25)] * 3)
    assert meter.levels.audio_send == 1
    assert meter.update(ParticipantMeasurement()).level == 5
    assert meter.update(audio_sender()).audio_send == 5


def test_loss_over_a_few_dtx_packets_is_pooled_until_enough_packets_are_seen():
    meter = NetworkQualityMeter()
    levels_over(meter, [audio_sender()] * 3)
    # DTX silence: 3 packets a second, one of them lost in the first second only
    silence = [audio_sender(fraction_lost=1 / 3, packets=3)] + [audio_sender(fraction_lost=0.0, packets=3)] * 6
    levels = levels_over(meter, silence)
    pooled = meter.levels.partials["audio_send"].measurement.fraction_lost
    assert pooled == pytest.approx(1 / 21)
    assert min(levels) >= 3  # 33 % for one second would have read as level 1


# --- stats at a verbosity, configuration, telemetry row ---------------------------------------------------


def detailed_levels():
    video = MediaMeasurement(
        fraction_lost=0.01, rtt_s=0.09, jitter_s=0.004, actual_bps=900e3, available_bps=1.2e6, required_bps=1.2e6
    )
    return score(ParticipantMeasurement(audio_send=CLEAN, audio_recv=CLEAN, video_recv=video))


def test_stats_at_none_minimal_moderate_and_detailed():
    levels = detailed_levels()
    assert network_quality_stats(levels, "none") is None
    minimal = network_quality_stats(levels, 1)
    assert (minimal.level, minimal.audio, minimal.video) == (levels.level, None, None)
    moderate = network_quality_stats(levels, "moderate")
    assert (moderate.audio.send, moderate.audio.recv) == (levels.audio_send, levels.audio_recv)
    assert (moderate.video.send, moderate.video.recv) == (None, levels.video_recv)
    assert moderate.audio.send_stats is None and moderate.video.recv_stats is None
    detailed = network_quality_stats(levels, 3)
    recv = detailed.video.recv_stats
    assert (recv.bandwidth.actual, recv.bandwidth.available, recv.bandwidth.level) == (900e3, 1.2e6, 5)
    assert (recv.latency.jitter, recv.latency.rtt) == (0.004, 0.09)  # seconds, as Twilio's JSDoc says
    assert recv.latency.level == levels.partials["video_recv"].latency
    assert (recv.fraction_lost.fraction_lost, recv.fraction_lost.level) == (0.01, 5)
    assert detailed.video.send_stats is None  # no video is sent
    assert detailed.audio.send_stats.bandwidth.level is None  # bandwidth is not scored for audio


@pytest.mark.parametrize("bad", [4, -1, "verbose", 1.0, True, None])
def test_an_unknown_verbosity_is_a_value_error_naming_the_allowed_ones(bad):
    with pytest.raises(ValueError, match="0 or 'none', 1 or 'minimal', 2 or 'moderate', 3 or 'detailed'"):
        parse_verbosity(bad)


def test_network_quality_configuration_follows_twilio():
    assert NetworkQualityConfiguration.from_option(True) == NetworkQualityConfiguration(local=1, remote=0)
    assert NetworkQualityConfiguration.from_option(False) is None
    assert NetworkQualityConfiguration.from_option(None) is None
    both = NetworkQualityConfiguration.from_option({"local": "detailed", "remote": "moderate"})
    assert (both.local, both.remote) == (3, 2)
    assert NetworkQualityConfiguration.from_option({"local": "none"}).local == 1  # none is minimal for local
    assert NetworkQualityConfiguration.from_option({"remote": 3}) == NetworkQualityConfiguration(1, 3)
    with pytest.raises(ValueError, match="allowed: local, remote"):
        NetworkQualityConfiguration.from_option({"locale": 1})
    with pytest.raises(ValueError, match="remote must be one of"):
        NetworkQualityConfiguration.from_option({"remote": 7})
    with pytest.raises(ValueError, match="True, False, None or a dict"):
        NetworkQualityConfiguration.from_option("yes")


def test_the_telemetry_row_carries_partials_and_their_inputs():
    row = detailed_levels().row()
    partials = [row[name] for name in ("audio_send", "audio_recv", "video_send", "video_recv")]
    assert partials == [5, 5, None, 5]
    assert row["level"] <= min(p for p in partials if p is not None)
    assert row["send_fraction_lost"] == 0.0 and row["recv_fraction_lost"] == 0.01
    assert row["rtt_ms"] == pytest.approx(90.0) and row["jitter_ms"] == pytest.approx(5.0)
    assert (row["recv_available_bps"], row["recv_actual_bps"]) == (1.2e6, 900e3)
    assert row["send_available_bps"] is None
    assert row["reason"] == "good"
    assert (row["latency_level"], row["loss_level"], row["bandwidth_level"]) == (5, 5, 5)
    assert row["mos"] > 4.2


def test_the_telemetry_row_names_the_worst_part_of_each_kind():
    lossy = MediaMeasurement(fraction_lost=0.06, rtt_s=0.3, jitter_s=0.0, packets=40)
    starved = MediaMeasurement(
        fraction_lost=0.0, rtt_s=0.02, actual_bps=2e5, available_bps=1e5, required_bps=1e6, packets=90
    )
    row = score(ParticipantMeasurement(audio_send=lossy, video_recv=starved)).row()
    assert row["latency_level"] == 3 and row["loss_level"] == 3 and row["bandwidth_level"] == 2
    assert row["level"] <= min(row["latency_level"], row["loss_level"], row["bandwidth_level"])
    assert (row["recv_required_bps"], row["send_required_bps"]) == (1e6, None)
    assert (row["send_packets"], row["recv_packets"]) == (40, 90)
    assert row["mos"] < 3.6
