"""KeyStone's benchmark suite: KeyStone side by side with the supervisors people use today.

Run it from the repository root with the project's virtualenv::

    .venv/bin/python -m bench                      # every suite, full size
    .venv/bin/python -m bench --suite supervisors  # KeyStone vs supervisord, runit, s6
    .venv/bin/python -m bench --smoke              # N = 3, one trial, short windows

Benchmarks are not tests: the test suite only runs ``--smoke`` to keep this code from
rotting. The method and the latest figures are in ``docs/benchmarks.md``.
"""
