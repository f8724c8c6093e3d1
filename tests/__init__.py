"""The test suite: unit, integration and e2e tiers, each with the conftest.py of its fixtures."""
