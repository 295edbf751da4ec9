"""The audit behind ``sklrp audit``: explain, evaluate, look for shortcuts, write a report."""

from .verdict import ClassFinding, Region, reliance_probe, shortcut_scan

__all__ = ["ClassFinding", "Region", "reliance_probe", "shortcut_scan"]
