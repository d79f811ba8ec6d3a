"""Bytes <-> values. Nothing in here does I/O or reads a clock."""
