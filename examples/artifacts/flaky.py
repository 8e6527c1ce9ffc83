#!/usr/bin/env python3
"""Crashes on its very first run (exit code 3), then runs steadily: shows on-failure restarts.

The marker file lives in the component's work directory, which survives restarts.
"""

import os
import pathlib
import sys
import time

marker = pathlib.Path(os.environ["KEYSTONE_WORK_PATH"]) / "crashed-once"
if not marker.exists():
    marker.write_text("the first run crashed on purpose\n")
    print("flaky: first run, crashing on purpose", flush=True)
    sys.exit(3)
print("flaky: recovered, running steadily", flush=True)
while True:
    time.sleep(3600)
