"""Telemetry: columnar recorders, sampling, the live feed client, Parquet runs, analysis."""
