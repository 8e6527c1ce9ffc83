"""uvicorn's server and config, without uvicorn's command line.

``import uvicorn`` runs the package ``__init__``, which imports ``uvicorn.main``: the CLI
(click), the reload and multiprocess supervisors (multiprocessing) and their helpers. The
agent uses none of it, and every module imported stays resident for the agent's life:
measured here, ``import uvicorn`` costs 3.1 MB of RSS where ``uvicorn.config`` and
``uvicorn.server`` alone cost 1.5 MB. So when nothing has imported uvicorn yet, the
package is registered without running its ``__init__`` and only those two modules load.
Anything that later does ``import uvicorn`` in the same process gets that bare package;
``uvicorn.Config``/``uvicorn.Server`` are put on it so the common names still work.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys

__all__ = ["Config", "Server"]


def _bare_package() -> None:
    if "uvicorn" in sys.modules:
        return
    spec = importlib.util.find_spec("uvicorn")
    if spec is None or spec.submodule_search_locations is None:
        return  # let the normal import below raise its own error
    package = importlib.util.module_from_spec(
        importlib.machinery.ModuleSpec("uvicorn", None, is_package=True)
    )
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    sys.modules["uvicorn"] = package


_bare_package()

from uvicorn.config import Config  # noqa: E402
from uvicorn.server import Server  # noqa: E402

_package = sys.modules["uvicorn"]
if not hasattr(_package, "Config"):
    _package.Config = Config  # type: ignore[attr-defined]
    _package.Server = Server  # type: ignore[attr-defined]
