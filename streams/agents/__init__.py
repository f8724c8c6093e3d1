"""The agents, handlers and timers: one module per stage of the topology."""
