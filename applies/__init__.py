"""Applies room: making the saved configuration real. ``ApplyRun`` (models), the container
runtimes (``runtime/``), the plan diff and its ordering (``applying``), live progress
(``progress``), the services' container state (``live``), how each service moves (``moves``),
starting, carrying out and recovering an apply (``services``), its tasks and its API.
"""
