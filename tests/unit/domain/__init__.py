"""The pure domain package."""
