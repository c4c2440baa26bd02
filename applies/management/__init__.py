"""Applies room: management commands (``apply``, ``status``)."""
