"""Units shared by the inventory and the planner (plain Python, no Django)."""

MB_PER_GB = 1024
"""VRAM is counted in MB; 1 GB = 1024 MB throughout gpuconfig."""
