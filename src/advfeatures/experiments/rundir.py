"""A run directory and its cached steps.

Layout::

    RUN/config.json            the configuration as given and as resolved
    RUN/stages/<step>.json     one stamp per finished step: its key and its result
    RUN/models/<name>.safetensors
    RUN/datasets/<kind>/       sharded constructions with a manifest
    RUN/results.json, RUN/report.md, RUN/figures/*.png

A step's key hashes its configuration and the keys of its inputs; a step whose stamp carries the
same key (and whose artifacts exist) is reused, anything else is recomputed. Interrupted training
resumes from its per-epoch checkpoint, interrupted constructions from their finished shards.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..distributed import peak_rss_mib
from ..storage import json_digest, read_json, write_json_atomic

log = logging.getLogger(__name__)


digest = json_digest  # a short stable hash of a JSON-able object (storage.json_digest)


class RunDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.timings: dict[str, dict[str, Any]] = {}

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def stamp(self, step: str) -> Path:
        return self.path("stages", f"{step}.json")

    def cached(self, step: str, key: str, artifacts: list[Path] = ()) -> dict[str, Any] | None:
        stamp = self.stamp(step)
        if not stamp.is_file():
            return None
        data = read_json(stamp)
        if data.get("key") != key or not all(Path(a).exists() for a in artifacts):
            return None
        return data["result"]

    def step(self, step: str, key: str, compute: Callable[[], dict[str, Any]], *, artifacts: list[Path] = ()) -> dict[str, Any]:
        """Return the cached result of ``step`` if its key matches, else compute and stamp it."""
        start = time.perf_counter()
        result = self.cached(step, key, artifacts)
        if result is not None:
            log.info("%s: reusing the finished step (key %s)", step, key)
            self.timings[step] = {"seconds": 0.0, "reused": True, "computed_seconds": self._computed_seconds(step)}
            return result
        log.info("%s: running", step)
        result = compute()
        seconds = time.perf_counter() - start
        peak = peak_rss_mib()  # monotone: the step that raises it is the one that needed the memory
        write_json_atomic(self.stamp(step), {"key": key, "result": result, "seconds": seconds, "peak_rss_mib_after": peak})
        self.timings[step] = {"seconds": seconds, "reused": False, "computed_seconds": seconds, "peak_rss_mib_after": peak}
        return result

    def _computed_seconds(self, step: str) -> float | None:
        try:
            return read_json(self.stamp(step)).get("seconds")
        except Exception:  # a stamp without timing is still a valid stamp
            return None

    def reset_folder(self, folder: Path, key: str) -> None:
        """Make ``folder`` belong to ``key``: a folder left by another configuration is emptied."""
        owner = folder / "key.json"
        if folder.exists() and (not owner.is_file() or read_json(owner).get("key") != key):
            log.info("%s was built with another configuration; rebuilding it", folder)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not owner.is_file():
            write_json_atomic(owner, {"key": key})
