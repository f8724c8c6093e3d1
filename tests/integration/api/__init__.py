"""The API in-process on the real stack."""
