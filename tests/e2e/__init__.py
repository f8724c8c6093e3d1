"""End-to-end tests: the whole stack as a user runs it."""
