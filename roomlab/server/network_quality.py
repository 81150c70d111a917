"""Network Quality levels on the server (SPEC §9): one `NetworkQualityMeter` per participant, fed
the server's measurements once a second; every level a row of `network_quality`; each client
told what it asked for.

Every connected participant gets a level each second, whoever asked for them: the table is the
record of the room. A client that asked for them (its connection's `network_quality`, a
`NetworkQualityConfiguration`) gets its own level and stats at its `local` verbosity and the
others' at its `remote` verbosity, through its connection's `report_network_quality`, only what
changed since it was last told.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..policy.quality import NetworkQualityMeter, QualityLevels, network_quality_stats
from ..telemetry.recorder import Telemetry, now_ns
from ..telemetry.schema import NETWORK_QUALITY
from .measurements import NetworkMeasurements

#: The `network_quality` columns that come from `QualityLevels.row()` (after time, room, participant).
ROW_COLUMNS = tuple(c.name for c in NETWORK_QUALITY[3:])


class NetworkQuality:
    """Levels of every participant, computed about once a second (`update`)."""

    def __init__(self, telemetry: Telemetry, measurements: NetworkMeasurements | None = None) -> None:
        self.telemetry = telemetry
        self.measurements = measurements or NetworkMeasurements()
        self._meters: dict[str, NetworkQualityMeter] = {}
        #: connection SID -> (the configuration it was last told at, participant SID -> what it was told)
        self._told: dict[str, tuple[Any, dict[str, Any]]] = {}

    def levels(self, participant_sid: str) -> QualityLevels | None:
        """The participant's latest levels (None before its first sample)."""
        meter = self._meters.get(participant_sid)
        return meter.levels if meter is not None else None

    def update(self, sessions: Iterable[Any], data_sent: Mapping[Any, int] | None = None) -> dict[str, QualityLevels]:
        """Measure, compute and record every participant's level; tell the clients that asked.
        `data_sent`: bytes sent on data channels per SCTP transport (see `NetworkMeasurements`)."""
        sessions = [s for s in sessions if not s.closed]
        measured = self.measurements.update(sessions, data_sent)
        at = now_ns()
        computed: dict[str, QualityLevels] = {}
        by_sid = {s.sid: s for s in sessions}
        for sid, measurement in measured.items():
            meter = self._meters.get(sid)
            if meter is None:
                meter = self._meters[sid] = NetworkQualityMeter()
            levels = computed[sid] = meter.update(measurement)
            session = by_sid[sid]
            row = levels.row()
            self.telemetry.record(
                "network_quality",
                at,
                session.live.room.unique_name,
                session.participant.identity,
                *(row[name] for name in ROW_COLUMNS),
            )
        for sid in set(self._meters) - set(by_sid):
            del self._meters[sid]
        for sid in set(self._told) - set(by_sid):
            del self._told[sid]
        rooms: dict[str, dict[str, QualityLevels]] = {}
        for sid, levels in computed.items():
            rooms.setdefault(by_sid[sid].live.room.sid, {})[sid] = levels
        for session in sessions:
            self._tell(session, rooms.get(session.live.room.sid, {}))
        return computed

    def _tell(self, session: Any, room: dict[str, QualityLevels]) -> None:
        """Send `session` what changed of its room's levels, at the verbosities it asked for."""
        config = session.network_quality
        if config is None:
            self._told.pop(session.sid, None)
            return
        previous_config, told = self._told.get(session.sid, (None, {}))
        if previous_config != config:
            told = {}
        told = {sid: stats for sid, stats in told.items() if sid in room}
        changed: dict[str, Any] = {}
        for sid, levels in room.items():
            verbosity = config.local if sid == session.sid else config.remote
            if not verbosity:
                continue
            stats = network_quality_stats(levels, verbosity)
            if sid not in told or told[sid] != stats:
                changed[sid] = told[sid] = stats
        self._told[session.sid] = (config, told)
        if changed:
            session.report_network_quality(changed)
