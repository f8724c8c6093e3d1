"""Dead letters, all in one place: what an agent could not process, with the reason.

``envelope`` is the JSON body, ``sender`` the worker's side (each step sends
under its own name through ``handling.Stage.dead_letter``), ``replay`` the
operator's side (``paystream dlq list|replay``).
"""
