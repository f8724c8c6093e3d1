"""The stack's tooling, on folders of its own."""
