"""Importing every module of streams/ in a fresh interpreter makes no app and reads no settings."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_importing_every_streams_module_creates_no_app_and_reads_no_settings() -> None:
    probe = textwrap.dedent("""
        import importlib, pkgutil
        import faust
        from paystream.settings import Settings
        made = []
        real_init = faust.App.__init__
        def counting_init(self, *args, **kwargs):
            made.append("app")
            real_init(self, *args, **kwargs)
        faust.App.__init__ = counting_init
        real_from_env = Settings.from_env.__func__
        Settings.from_env = classmethod(
            lambda cls, *a, **k: made.append("settings") or real_from_env(cls, *a, **k))
        import streams
        names = [m.name for m in pkgutil.walk_packages(streams.__path__, "streams.")]
        for name in names:
            importlib.import_module(name)
        print(len(names), made)
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    count, made = done.stdout.split(maxsplit=1)
    assert int(count) > 40  # every module of streams/ was imported
    assert made.strip() == "[]"
