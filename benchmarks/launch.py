"""Run one command and report its wall time, CPU time and peak resident memory as JSON (last line).

    python benchmarks/launch.py -- advfeatures reproduce --preset digits

Why a separate launcher: Linux counts a child's memory from the moment it is forked, and a fork
starts with the parent's whole resident set; a benchmark process holding a ResNet's activations
would lend the child its gigabytes. This launcher imports nothing heavy, so the command it forks
starts small, and ``resource.getrusage(RUSAGE_CHILDREN)`` after the command ends is the command's
own peak (that of its largest process, descendants included).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    cmd = argv[argv.index("--") + 1:] if "--" in argv else argv
    if not cmd:
        print("usage: launch.py -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    wall = time.perf_counter()
    code = subprocess.call(cmd)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"exit_code": code, "wall_seconds": round(time.perf_counter() - wall, 2),
                      "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
                      "minor_page_faults": usage.ru_minflt}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
