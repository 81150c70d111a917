"""Quality layers of a layered (simulcast) video publication, as the publisher announces them.

aiortc has no simulcast, so each layer travels from the publisher to the server as an RTP stream
of its own (one transceiver per layer); the publication is still one track for everyone else. The
publisher names its layers in the `publish` message (`options.layers`), the server's offers say
which mid carries which layer (`mids[mid].layer`), and subscribers learn the layers from the
publication's options and which one they receive from `layer_changed` messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: Layer names, lowest quality first (Twilio's simulcast layers).
LAYER_NAMES = ("low", "standard", "high")
#: Largest width or height a layer may announce.
MAX_DIMENSION = 7680


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a layered video track: its name, picture size and nominal bitrate."""

    name: str
    """`low`, `standard` or `high`."""
    width: int
    """Picture width, pixels."""
    height: int
    """Picture height, pixels."""
    bitrate_bps: int
    """What the publisher sends on this layer, about, bit/s (the server measures the real rate)."""

    def __post_init__(self) -> None:
        if self.name not in LAYER_NAMES:
            raise ValueError(f"layer name must be one of {', '.join(LAYER_NAMES)}, got {self.name!r}")
        for label, value, high in (
            ("width", self.width, MAX_DIMENSION),
            ("height", self.height, MAX_DIMENSION),
            ("bitrate_bps", self.bitrate_bps, 100_000_000),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise ValueError(f"layer {self.name!r}: {label} must be an integer from 1 to {high}, got {value!r}")

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "width": self.width, "height": self.height, "bitrate_bps": self.bitrate_bps}

    @classmethod
    def from_wire(cls, value: Any) -> LayerSpec:
        """A layer from its JSON object; a ValueError says what is wrong."""
        fields = {"name", "width", "height", "bitrate_bps"}
        if not isinstance(value, dict) or set(value) != fields:
            raise ValueError(f"a layer must be an object with exactly the fields {', '.join(sorted(fields))}")
        return cls(value["name"], value["width"], value["height"], value["bitrate_bps"])


def check_layers(layers: Iterable[LayerSpec]) -> tuple[LayerSpec, ...]:
    """Layers in order, lowest first: at least one, each name at most once."""
    ordered = sorted(layers, key=lambda layer: LAYER_NAMES.index(layer.name))
    names = [layer.name for layer in ordered]
    if not ordered:
        raise ValueError(f"a layered track needs at least one layer among {', '.join(LAYER_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"each layer name may appear once, got {names}")
    return tuple(ordered)


def parse_layers(value: Any) -> tuple[LayerSpec, ...]:
    """The `layers` option of a publication, as sent: a list of layer objects."""
    if not isinstance(value, list):
        raise ValueError("layers must be a list of layer objects")
    return check_layers(LayerSpec.from_wire(item) for item in value)
