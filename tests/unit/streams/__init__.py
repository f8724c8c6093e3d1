"""The stream worker's agents and parts, in memory."""
