"""Prometheus, its alerts and the operator console on the running stack."""
