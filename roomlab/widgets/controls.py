"""Controls that change a running room: a simulated participant's (or a client's) emulated link.

Their callbacks may run on any thread (a subshell's under JupyterLab >= 4.4): they read their own
fields and hand one command to the view (`View._command`), which passes it to the room's loop.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

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
