"""Controls that change a running room: a simulated participant's (or a client's) emulated link,
and a subscriber's Bandwidth Profile and track priorities.

Their callbacks may run on any thread (a subshell's under JupyterLab >= 4.4): they read their own
fields and hand one command to the view (`View._command`), which passes it to the room's loop.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..policy.allocation import MODES, PRIORITIES
from ..telemetry.links import current, links

if TYPE_CHECKING:
    from .view import View

#: Largest values the fields take (the Link itself accepts any non-negative number).
MAX_DELAY_MS = 5000
MAX_KBPS = 1_000_000


def _field(kind: type, description: str, css: str, **options: Any) -> Any:
    field = kind(description=description, style={"description_width": "initial"}, **options)
    field.layout.width = "150px"
    field.add_class(css)
    return field


class LinkControls(widgets.HBox):
    """Rate (each direction), delay and loss of one participant's emulated link. Choosing a
    participant shows its link as the tables have it; `apply` sends what the fields changed."""

    def __init__(self, view: View, identities: list[str]) -> None:
        self._view = view
        self.identity = widgets.Dropdown(
            options=identities, description="link of", layout=widgets.Layout(width="190px")
        )
        self.identity.add_class("roomlab-link-identity")
        self.up_kbps = _field(widgets.BoundedIntText, "up kbit/s", "roomlab-link-up", min=0, max=MAX_KBPS)
        self.down_kbps = _field(widgets.BoundedIntText, "down kbit/s", "roomlab-link-down", min=0, max=MAX_KBPS)
        self.delay_ms = _field(widgets.BoundedIntText, "delay ms", "roomlab-link-delay", min=0, max=MAX_DELAY_MS)
        self.loss_pct = _field(widgets.BoundedFloatText, "loss %", "roomlab-link-loss", min=0, max=100, step=0.5)
        self.apply = widgets.Button(description="apply", tooltip="change this link now (0 kbit/s: no limit)")
        self.apply.add_class("roomlab-link-apply")
        self.apply.on_click(self._apply)
        self.identity.observe(self._chosen, "value")
        #: (identity, changes()) as last filled in from the tables or applied: apply sends what differs
        self._shown: tuple[str, dict[str, Any]] | None = None
        super().__init__([self.identity, self.up_kbps, self.down_kbps, self.delay_ms, self.loss_pct, self.apply])
        self.add_class("roomlab-link-controls")
        self.fill()

    def changes(self) -> dict[str, Any]:
        """The fields as `Link.update` parameters (0 kbit/s: no rate limit)."""
        return {
            "up_kbps": self.up_kbps.value or None,
            "down_kbps": self.down_kbps.value or None,
            "delay_ms": float(self.delay_ms.value),
            "loss": round(float(self.loss_pct.value) / 100, 6),
        }

    def _apply(self, _button: Any = None) -> None:
        identity = self.identity.value
        if identity is None:
            return
        fields = self.changes()
        shown = self._shown
        changes = (
            fields
            if shown is None or shown[0] != identity
            else {name: value for name, value in fields.items() if value != shown[1].get(name)}
        )
        if not changes:
            self._view._say(f"link of {identity}: nothing changed")
            return
        self._shown = (identity, fields)
        what = f"link of {identity}: " + ", ".join(f"{k}={v}" for k, v in changes.items())
        self._view._command(what, self._view.source.change_link, identity, **changes)

    def _chosen(self, change: Any) -> None:
        self._view._call_in_loop(self.fill)

    def fill(self) -> None:
        """Show the chosen participant's link as the tables have it now (on the view's loop)."""
        identity = self.identity.value
        now = current(links(self._view.source.frame("events")))
        if identity is None or identity not in now.index:
            return  # not joined yet: its link is not in the tables
        link = now.loc[identity]

        def number(value: Any) -> float:
            return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

        self.up_kbps.value = min(MAX_KBPS, round(number(link["up_kbps"])))
        self.down_kbps.value = min(MAX_KBPS, round(number(link["down_kbps"])))
        self.delay_ms.value = min(MAX_DELAY_MS, round(number(link["down_delay_ms"])))
        self.loss_pct.value = round(number(link["down_loss"]) * 100, 2)
        self._shown = (identity, self.changes())


#: What the priority fields offer: the subscriber's own priority for a track, or the publisher's.
PRIORITY_CHOICES = (("publisher's", "publisher"), *((p, p) for p in PRIORITIES))
#: Largest max_subscription_bitrate the field takes, kbit/s.
MAX_SUBSCRIPTION_KBPS = 1_000_000


class AllocationControls(widgets.VBox):
    """A subscriber's Bandwidth Profile (mode, max_subscription_bitrate) and its own priority for
    each video track it receives. A choice is sent at once (the bitrate when its field is left or
    Enter is pressed); the fields show the room's state as the tables have it, and change only
    when the tables do, so that a choice is not undone before the room has taken it."""

    def __init__(self, view: View, identity: str) -> None:
        self._view = view
        self.identity = identity
        self.mode = widgets.Dropdown(options=MODES, description="mode", layout=widgets.Layout(width="220px"))
        self.mode.add_class("roomlab-allocation-mode")
        self.max_kbps = _field(
            widgets.BoundedIntText,
            "max kbit/s",
            "roomlab-allocation-max-bitrate",
            min=0,
            max=MAX_SUBSCRIPTION_KBPS,
            continuous_update=False,
            tooltip="max_subscription_bitrate (0: no limit)",
        )
        self.max_kbps.layout.width = "170px"
        self.priorities = widgets.HBox()
        self.priorities.add_class("roomlab-allocation-priorities")
        #: track SID -> its priority field
        self.priority_fields: dict[str, Any] = {}
        #: what the tables said when the fields were last filled: a field changes when they change
        self._table: dict[str, Any] = {}
        self._filling: int | None = None  # the thread filling the fields: their changes are not choices
        #: the subscriber's profile as last recorded (its other options are kept when a field changes)
        self._recorded: dict[str, Any] = {}
        self.mode.observe(self._mode_chosen, "value")
        self.max_kbps.observe(self._bitrate_chosen, "value")
        profile = widgets.HBox([self.mode, self.max_kbps])
        profile.add_class("roomlab-allocation-profile")
        super().__init__([profile, self.priorities])
        self.add_class("roomlab-allocation-controls")

    # the room's state, from the tables (on the view's loop) --------------------------------------
    def fill(self, mode: str | None, profile: dict[str, Any] | None, tracks: list[tuple[str, str, str]]) -> None:
        """Show the subscriber's mode (from its allocations), its profile as last recorded (None:
        not known) and its tracks as (SID, label, effective priority), changing only what the
        tables changed."""
        self._recorded = profile or {}
        max_bps = (self._recorded.get("video") or {}).get("max_subscription_bitrate") or 0
        self._filling = threading.get_ident()
        try:
            if mode is not None and mode != self._table.get("mode"):
                self._table["mode"] = mode
                self.mode.value = mode
            if profile is not None and max_bps != self._table.get("max_bps"):
                self._table["max_bps"] = max_bps
                self.max_kbps.value = min(MAX_SUBSCRIPTION_KBPS, round(max_bps / 1000))
            if [sid for sid, _, _ in tracks] != list(self.priority_fields):
                self.priority_fields = {sid: self._priority_field(sid, label) for sid, label, _ in tracks}
                self.priorities.children = tuple(self.priority_fields.values())
            for sid, _, priority in tracks:
                if priority != self._table.get(sid):
                    self._table[sid] = priority
                    self.priority_fields[sid].value = priority
        finally:
            self._filling = None

    def _priority_field(self, sid: str, label: str) -> Any:
        field = widgets.Dropdown(
            options=PRIORITY_CHOICES,
            value=None,
            description=label,
            style={"description_width": "initial"},
            layout=widgets.Layout(width="auto"),
        )
        field.add_class("roomlab-allocation-priority")
        field.observe(lambda change: self._priority_chosen(sid, change), "value")
        return field

    # choices (any thread) -------------------------------------------------------------------------
    def _choosing(self) -> bool:
        return self._filling != threading.get_ident()

    def profile(self) -> dict[str, Any]:
        """The subscriber's profile with the fields' mode and max_subscription_bitrate (the other
        options as last recorded for it, else Twilio's defaults)."""
        video = dict(self._recorded.get("video") or {})
        video["mode"] = self.mode.value
        video["max_subscription_bitrate"] = self.max_kbps.value * 1000 or None
        return {"video": video}

    def _mode_chosen(self, change: Any) -> None:
        if self._choosing() and change["new"] is not None:
            self._send_profile(f"mode of {self.identity}: {change['new']}")

    def _bitrate_chosen(self, change: Any) -> None:
        if self._choosing():
            limit = f"{change['new']} kbit/s" if change["new"] else "none"
            self._send_profile(f"max_subscription_bitrate of {self.identity}: {limit}")

    def _send_profile(self, what: str) -> None:
        self._view._command(what, self._view.source.set_bandwidth_profile, self.identity, self.profile())

    def _priority_chosen(self, sid: str, change: Any) -> None:
        if not self._choosing() or change["new"] is None:
            return
        priority = None if change["new"] == "publisher" else change["new"]
        label = self.priority_fields[sid].description if sid in self.priority_fields else sid
        shown = priority or "the publisher's"
        what = f"{self.identity}'s priority for {label}: {shown}"
        self._view._command(what, self._view.source.set_track_priority, self.identity, sid, priority)
