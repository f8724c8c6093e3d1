"""The local PayStream stack's tooling, run as `python3 -m stack` (see stack/__main__.py).

Standard library only, so it runs with the system python3 before .venv exists;
stack.localstripe and stack.chaos are the exceptions, run with .venv/bin/python.
Nothing here reads the environment at import: `config.Config()` does, when made.
"""
