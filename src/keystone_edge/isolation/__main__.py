"""``python -m keystone_edge.isolation --plan HEX [--status-fd N] -- PROGRAM [ARG...]``.

The launcher as a module, for debugging by hand. The agent does not use this form: it
imports the whole package (msgspec included) and needs site-packages, so it starts slower
than the ``-I -S`` bootstrap that :func:`keystone_edge.isolation.wrap_argv` builds.
(``-m keystone_edge.isolation.launcher`` works too, but runpy warns that the package
already imported the module.)
"""

from __future__ import annotations

from keystone_edge.isolation.launcher import main

if __name__ == "__main__":
    main()
