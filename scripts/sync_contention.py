#!/usr/bin/env python3
# SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
# SPDX-License-Identifier: Apache-2.0
"""Does appending to a file slow down an fdatasync of it running meanwhile?

Measures the median of `pwrite` + `fdatasync` on a preallocated file, alone
and while a second thread keeps appending to the same file (what a pipelined
journal would do), in alternating rounds of 2 s. BENCHMARKS.md quotes it.

    python3 scripts/sync_contention.py [DIR]
"""
import os
import statistics
import sys
import tempfile
import threading
import time

RECORD = 3000  # bytes per append, about one batch of journal frames


def main() -> None:
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    with tempfile.NamedTemporaryFile(dir=directory) as f:
        fd = f.fileno()
        os.pwrite(fd, b"\0" * (64 << 20), 0)
        os.fsync(fd)
        offset = [0]
        lock = threading.Lock()
        stop = threading.Event()

        def take() -> int:
            with lock:
                at = offset[0]
                offset[0] += RECORD
                return at

        def appender() -> None:
            while not stop.is_set():
                os.pwrite(fd, b"x" * RECORD, take())
                time.sleep(0.00003)

        for concurrent in (False, True, False, True):
            offset[0] = 0
            stop.clear()
            other = threading.Thread(target=appender) if concurrent else None
            if other:
                other.start()
            samples = []
            end = time.time() + 2
            while time.time() < end:
                os.pwrite(fd, b"y" * RECORD, take())
                start = time.perf_counter()
                os.fdatasync(fd)
                samples.append(time.perf_counter() - start)
            stop.set()
            if other:
                other.join()
            label = "while appending" if concurrent else "alone"
            print(f"fdatasync p50 {label:>15}: {statistics.median(samples) * 1e6:6.1f} µs"
                  f" ({len(samples)} syncs)")


if __name__ == "__main__":
    main()
