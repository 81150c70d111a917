"""Pure models (no I/O, no server imports): subscribe rules, network quality (`quality`), the
dominant speaker (`speaker`), each subscriber's downlink estimate (`bandwidth_estimate`) and its
bandwidth-profile allocation (`allocation`)."""
