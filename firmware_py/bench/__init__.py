"""Benchmarks that ship with the device package (``genre-edge bench``)."""
