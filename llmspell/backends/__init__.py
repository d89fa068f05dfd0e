"""Backends: one class per kind of engine, all speaking the Backend contract of base.py."""
