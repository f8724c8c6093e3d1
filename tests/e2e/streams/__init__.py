"""Stream workers of the session's own on the running stack."""
