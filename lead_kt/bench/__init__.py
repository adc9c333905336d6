"""Benchmarks of lead_kt components (input pipeline speed, ...)."""
