"""Drivers: the only place that jits (ARCHITECTURE.md section 5)."""
