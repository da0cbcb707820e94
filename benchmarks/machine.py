"""What a benchmark ran on and beside: CPU, threads, allocator, and the other load on the machine.

On a shared 2-core machine other processes distort timings 3–5×, so every benchmark records how
much CPU the *other* processes took while it ran (from ``/proc/stat`` minus this process's own
CPU time) and the load average, and times its own work both by the wall clock and by this
process's CPU time (which other processes disturb far less).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

import torch

from advfeatures.distributed import allocator_settings, peak_rss_mib  # noqa: F401  (re-exported for bench.py)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict:
    info = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "allocator": allocator_settings(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return info


def _proc_stat() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return (total - idle) / hz, total / hz


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class LoadMeter:
    """CPU taken by other processes between :meth:`start` and :meth:`stop`, in cores."""

    start_stat: tuple[float, float] | None = None
    start_own: float = 0.0
    start_wall: float = 0.0

    def start(self) -> LoadMeter:
        self.start_stat, self.start_own, self.start_wall = _proc_stat(), _own_cpu(), time.perf_counter()
        return self

    def stop(self) -> dict:
        end_stat, own, wall = _proc_stat(), _own_cpu(), time.perf_counter()
        out = {"seconds": round(wall - self.start_wall, 2), "loadavg_1min": round(os.getloadavg()[0], 2)}
        if self.start_stat and end_stat and wall > self.start_wall:
            busy = end_stat[0] - self.start_stat[0]
            others = max(0.0, busy - (own - self.start_own))
            out["other_processes_cores"] = round(others / (wall - self.start_wall), 2)
            out["own_cores"] = round((own - self.start_own) / (wall - self.start_wall), 2)
        return out


