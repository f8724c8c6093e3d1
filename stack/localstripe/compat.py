"""Whether the installed localstripe is the 1.15.10 the patch was written for: a fingerprint
of every function it replaces or relies on, compared at start."""

from __future__ import annotations

import hashlib
import inspect
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from stack.errors import LauncherError

WRITTEN_FOR = "1.15.10"
DEFAULT_STORE = Path("/tmp/localstripe.pickle")

# fingerprint() of everything the patch replaces or relies on, in localstripe 1.15.10.
FINGERPRINTS = {
    "resources.Store.try_load_from_disk": "dbece696d3bb719f",
    "resources.Store.dump_to_disk": "4c7c9452f5a1e1b4",
    "resources.Store.__setitem__": "20f6e7443e1ae928",
    "resources.Store.__delitem__": "96fab7526641a46a",
    "resources.StripeObject._api_list_all": "f53097a725a39fc1",
    "server.save_store_middleware": "394feb7a4edfe622",
    "server.flush_store": "80009c76f04f5945",
    "server.start": "590452e5b3d7e506",
}


def fingerprint(func: Callable[..., Any]) -> str:
    """A hash of a function's code, blind to indentation, blank lines and comments."""
    lines = textwrap.dedent(inspect.getsource(func)).splitlines()
    kept = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()[:16]


def _own(module: ModuleType, dotted: str) -> Any:
    """module.Class.attr as defined in that class itself (not inherited), or KeyError."""
    obj: Any = module
    for part in dotted.split("."):
        namespace = vars(obj) if isinstance(obj, (type, ModuleType)) else {}
        if part not in namespace:
            raise KeyError(dotted)
        obj = namespace[part]
    return obj.__func__ if isinstance(obj, classmethod) else obj


def verify(resources: ModuleType, server: ModuleType) -> None:
    """Raises LauncherError unless everything the patch touches is as in 1.15.10."""
    installed = getattr(sys.modules.get("localstripe"), "__version__", "unknown")
    where = (f"stack.localstripe was written for localstripe {WRITTEN_FOR} "
             f"(installed: {installed})")
    modules = {"resources": resources, "server": server}
    for name, expected in FINGERPRINTS.items():
        module, _, dotted = name.partition(".")
        try:
            found = fingerprint(_own(modules[module], dotted))
        except KeyError:
            raise LauncherError(f"{where}: {name} is missing; the patch no longer "
                                "applies") from None
        except (OSError, TypeError) as err:
            raise LauncherError(f"{where}: cannot read {name}: {err}") from err
        if found != expected:
            raise LauncherError(f"{where}: {name} has changed; check that the patch still "
                                f"holds, then update FINGERPRINTS[{name!r}] to {found!r}")
    store = vars(resources).get("store")
    if not isinstance(store, resources.Store) or vars(server).get("store") is not store:
        raise LauncherError(f"{where}: localstripe.server no longer serves resources.store")
    app = vars(server).get("app")
    if app is None or app.frozen:
        raise LauncherError(f"{where}: localstripe.server.app is missing or already frozen")
