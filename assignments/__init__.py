"""Assignments room: what runs where. The catalog (``models``: AiService, its parts, the
rules), the configuration (GpuConfig, Assignment, ConfigVersion), the planner (``planner/``:
pure, no Django), the generated files (``files/``), the config services and selectors, their
tasks and API. Making it real is ``applies``; the page is ``front``.
"""
