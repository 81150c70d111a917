"""Pure decision functions (no I/O): subscribe rules, and later quality, speaker and allocation."""
