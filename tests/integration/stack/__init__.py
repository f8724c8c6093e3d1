"""The stack's tooling against real processes and the running stack."""
