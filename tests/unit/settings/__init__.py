"""The one settings object."""
