#!/usr/bin/env python3
"""Counts heartbeats into the kv-store it depends on, and prints each one."""

import argparse
import time
import urllib.request


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--message", default="heartbeat")
    args = parser.parse_args()
    count = 0
    while True:
        count += 1
        request = urllib.request.Request(
            f"{args.store}/kv/heartbeats", data=str(count).encode(), method="PUT"
        )
        try:
            urllib.request.urlopen(request, timeout=2).close()
            print(f"{args.message} #{count} stored", flush=True)
        except OSError as exc:
            print(f"{args.message} #{count} not stored: {exc}", flush=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
