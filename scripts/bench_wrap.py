"""Peak memory of flowsh while a step streams a lot of output (`flowsh wrap`).

`measure_long_output()` runs `flowsh wrap` on a command that writes `megabytes` MB of
output, in a fresh Python process that reports `getrusage(RUSAGE_CHILDREN).ru_maxrss`:
the peak RSS of the largest of its descendants, which is the flowsh process (the shell,
`yes` and `head` are a few MB). Memory must stay flat however long the output is: the
output is streamed line by line to stdout and the step log, never held.

Usage: python scripts/bench_wrap.py [MEGABYTES]   (prints JSON)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

_PROBE = r"""
import resource, subprocess, sys, time
t = time.monotonic()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                      stdin=subprocess.DEVNULL).returncode
took = time.monotonic() - t
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code, took)
"""


def measure_long_output(megabytes: int = 200, *, quiet_on_success: bool = False,
                        line_length: int = 1000, newlines: bool = True) -> dict[str, Any]:
    """Stream `megabytes` MB through one wrapped step; returns peak RSS (MB) and more.

    With `quiet_on_success` the output goes straight to the step log (no Python in the
    path); without it every line passes through flowsh on its way to stdout. Without
    `newlines` the output is one endless line (flowsh must pass it on in pieces).
    """
    line = "x" * (line_length - 1)
    size = megabytes * 1_000_000
    command = (f"yes {line} | head -c {size}" if newlines
               else f"head -c {size} /dev/zero | tr '\\0' x")
    argv = [sys.executable, "-m", "flowsh", "wrap", "--name", "bench-long-output",
            "--overlap", "allow"]
    if quiet_on_success:
        argv.append("--quiet-on-success")
    argv += ["--", "bash", "-c", command]
    with tempfile.TemporaryDirectory(prefix="flowsh-bench-") as home:
        env = {**os.environ, "FLOWSH_HOME": home, "FLOWSH_LOAD_ENTRYPOINTS": "0"}
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-c", _PROBE, *argv], env=env,
                             capture_output=True, text=True, check=True).stdout.split()
        wall = time.monotonic() - t0
        logs = [os.path.join(dp, f) for dp, _, fs in os.walk(home) for f in fs
                if f.endswith(".log")]
        logged = sum(os.path.getsize(p) for p in logs)
    peak_kb, code, took = int(out[0]), int(out[1]), float(out[2])
    return {
        "megabytes": megabytes,
        "quiet_on_success": quiet_on_success,
        "newlines": newlines,
        "exit_code": code,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "seconds": round(took, 2),
        "wall_seconds": round(wall, 2),
        "mb_per_second": round(megabytes / took, 1) if took else None,
        "log_bytes": logged,
    }


if __name__ == "__main__":
    mb = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    print(json.dumps([measure_long_output(mb), measure_long_output(mb, quiet_on_success=True)],
                     indent=2))
