"""Files that are never half-written: atomic writes, safetensors, and sharded datasets.

Everything is written to a temporary name in the destination folder and renamed into place, so an
interrupted job leaves either the old file or the new one. A sharded dataset is a folder of
``shard-00000.safetensors`` files and a ``manifest.json``; a construction that stops part-way
resumes at the first shard that is missing. A temporary is named after its process, so one a
killed run left is removed by the next write of the same file, and one of a live run is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors_bytes

from .errors import DataError

MANIFEST = "manifest.json"


def current_umask() -> int:
    """This process's umask (read from ``/proc`` where possible: setting it to read it back is not
    thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    The file ends with the mode any new file of the user gets, ``0o666 & ~umask`` (0644 under the
    usual umask 022, 0600 under 077): the temporary file ``mkstemp`` makes is private (0600) while it
    is written, and would otherwise stay so, leaving reports and models unreadable to the colleagues
    the user's umask lets read them. Folders made on the way get ``0o777 & ~umask`` (``mkdir``'s own).
    """
    path = Path(path)
    tmp = make_temporary(path)
    try:
        yield Path(tmp)
        if os.environ.get(FAULT_ENV):  # the interruption tests' mid-write fault (fault_point)
            global _writes
            _writes += 1
            fault_point("write", _writes - 1)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---- temporaries named after their owner ---------------------------------------------------------
# ``.{name}.~{pid}@{host}~{random}.tmp`` beside ``name``: a run killed with SIGKILL leaves its
# temporary behind, and the next write of ``name`` can tell whose it was: one of a process that is
# gone is removed (a shard's is as large as the shard), one of a live process means another run is
# writing the same file, which is refused rather than raced.


def _host_tag() -> str:
    import socket

    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"


def make_temporary(path: str | Path, *, folder: bool = False) -> Path:
    """A new empty temporary file (or folder) beside ``path``, named after this process, once the
    temporaries of ``path`` left by dead processes are removed (see :func:`clear_stale_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_temporaries(path)
    prefix = f".{path.name}.~{os.getpid()}@{_host_tag()}~"
    if folder:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _started_after(pid: int, when: float) -> bool:
    """Whether process ``pid`` started after time ``when`` (so it did not make a file last written
    then: its PID was reused); False where ``/proc`` cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK") > when + 2  # btime is whole seconds
    except (OSError, ValueError, IndexError, StopIteration):
        return False


def clear_stale_temporaries(path: str | Path) -> None:
    """Remove the temporaries of ``path`` whose process is gone (killed part-way: they are never
    reused, only half-written); refuse, in one line, while a live process of this machine, or one of
    another machine sharing the folder, has one (it is writing ``path`` now). Temporaries of this
    process and names of any other pattern are left alone."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.~(\d+)@([A-Za-z0-9_-]+)~[A-Za-z0-9_]+\.tmp$")
    try:
        entries = [e for e in os.scandir(path.parent) if e.name.startswith(f".{path.name}.~")]
    except OSError:
        return
    host = _host_tag()
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None:
            continue
        pid, owner = int(m.group(1)), m.group(2)
        tmp = Path(entry.path)
        if owner != host:
            raise DataError(f"a run on {owner} (process {pid}) may be writing {path}; wait for it, or remove {tmp} if that run is gone")
        if pid == os.getpid():
            continue
        try:
            written = tmp.lstat().st_mtime
        except FileNotFoundError:
            continue  # its owner just renamed or removed it
        if _pid_alive(pid) and not _started_after(pid, written):
            raise DataError(f"another run is writing {path} (process {pid}); wait for it to finish, or remove {tmp} if it is not ours")
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON, refusing (one line, nothing written) a nan or ±inf anywhere in it:
    ``NaN`` and ``Infinity`` are not JSON, and a result holding them is a wrong result."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    except ValueError:
        where = _first_non_finite(json.loads(json.dumps(obj, default=_json_default)))
        raise DataError(f"refusing to write {path}: {where} is not a finite number (a diverged run or an "
                        "infinite setting?); nothing was written") from None
    write_text_atomic(path, text + "\n")


def _first_non_finite(obj: Any, where: str = "the value") -> str:
    """The path (``a.b[2]``) of the first nan or ±inf in a JSON-like value."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"{where} ({obj})"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        inner = f"{where}[{k}]" if isinstance(k, int) else (k if where == "the value" else f"{where}.{k}")
        found = _first_non_finite(v, inner)
        if found:
            return found
    return "" if where != "the value" else "a value"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not a JSON file") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text, so not a JSON file of ours; delete or replace it") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); delete or fix it") from None
    except RecursionError:
        raise DataError(f"{path} is nested too deeply to be a file of ours; delete or replace it") from None


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` in one plain file write, so that a full disk (ENOSPC, or EFBIG past a file
    size limit) surfaces as the ``OSError`` it is (the CLI's one line) rather than inside a
    library's writer, and only the temporary file, which is removed, is ever half-written."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def save_safetensors_atomic(tensors: dict[str, torch.Tensor], path: str | Path, *, metadata: dict[str, str] | None = None) -> None:
    data = save_safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    write_bytes_atomic(path, _sort_metadata(data))


def _sort_metadata(data: bytes) -> bytes:
    """A fresh safetensors file's bytes with its header's metadata table in sorted order.

    safetensors writes the table in its hash map's order, which changes from process to process, so
    the same tensors and metadata saved by two processes (an uninterrupted run and a resumed one)
    got different bytes and sha256s. The sorted header has the same length (the same entries), so
    only those bytes change; if it somehow does not, the bytes are left as written."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size], object_pairs_hook=dict)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or len(meta) < 2:
        return data
    rest = {k: v for k, v in header.items() if k != "__metadata__"}
    text = json.dumps({"__metadata__": dict(sorted(meta.items())), **rest}, separators=(",", ":"), ensure_ascii=False)
    new = text.encode("utf-8")
    if len(new) > size:
        return data
    return data[:8] + new + b" " * (size - len(new)) + data[8 + size:]  # the format allows trailing spaces in the header


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise DataError(f"{path} is not a readable safetensors file ({' '.join(str(exc).split())[:200]}); "
                        "delete it and rebuild") from None


def shard_key(path: str | Path) -> str | None:
    """The construction key recorded in a shard's metadata (None for shards written without one)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("key")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path} is not a readable shard ({' '.join(str(exc).split())[:200]}); "
                        "delete it and resume the construction") from None


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def json_digest(obj: Any) -> str:
    """A short stable hash (16 hex digits) of a JSON-able object: its keys sorted, anything else
    JSON cannot hold written as ``str``. Keys run folders, construction folders and checkpoints."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tensor_digest(*tensors: torch.Tensor) -> str:
    """A short content hash of tensors (used to key cached pipeline steps)."""
    return chunked_digest((t.dtype, tuple(t.shape), [t]) for t in tensors)


def chunked_digest(parts: Iterable[tuple[torch.dtype, tuple[int, ...], Iterable[torch.Tensor]]]) -> str:
    """:func:`tensor_digest` of tensors given as (dtype, shape, consecutive row chunks): the chunks
    are hashed as they come, so a tensor that never fits in memory gets the digest it would have."""
    h = hashlib.sha256()
    for dtype, shape, chunks in parts:
        h.update(str((dtype, tuple(shape))).encode())
        for t in chunks:
            if t.dtype != dtype:
                raise DataError(f"a {dtype} tensor's digest was given a {t.dtype} chunk")
            t = t.detach().cpu().contiguous().reshape(-1)  # 0-d tensors (BatchNorm's counters) cannot be viewed as bytes
            if t.numel():
                h.update(memoryview(t.view(torch.uint8).numpy()))
    return h.hexdigest()[:16]


def shard_path(folder: str | Path, index: int) -> Path:
    return Path(folder) / f"shard-{index:05d}.safetensors"


def missing_shards(folder: str | Path, count: int) -> list[int]:
    """Indices of shards that are not on disk yet (what a resumed construction still has to do)."""
    return [i for i in range(count) if not shard_path(folder, i).is_file()]


def write_manifest(folder: str | Path, *, num_shards: int, config: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the manifest once every shard exists, listing shards with their hashes and sizes."""
    folder = Path(folder)
    missing = missing_shards(folder, num_shards)
    if missing:
        raise DataError(f"cannot write the manifest of {folder}: shards {missing[:5]} are missing; resume the construction")
    shards = []
    for i in range(num_shards):
        p = shard_path(folder, i)
        layout = safetensors_layout(p)  # from the header: the images are not read
        if "labels" not in layout:
            raise DataError(f"{p} has no labels; it is not a shard of this construction (delete it and resume)")
        shards.append({"file": p.name, "count": int(layout["labels"].shape[0]), "sha256": file_sha256(p)})
    manifest = {
        "format": "advfeatures-dataset/1",
        "count": sum(s["count"] for s in shards),
        "shards": shards,
        "config": config,
        "versions": {"torch": torch.__version__},
        **(extra or {}),
    }
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def read_shards(paths: Iterable[str | Path]) -> dict[str, torch.Tensor]:
    """Concatenate each key's tensors across shard files, in the given order."""
    parts: dict[str, list[torch.Tensor]] = {}
    for p in paths:
        for k, v in load_safetensors(p).items():
            parts.setdefault(k, []).append(v)
    try:
        return {k: torch.cat(v) for k, v in parts.items()}
    except RuntimeError as exc:
        raise DataError(f"the shards do not fit together ({' '.join(str(exc).split())[:200]}); they are not of one "
                        "construction: delete the folder and rebuild it") from None


def read_manifest(folder: str | Path, *, verify: bool = True) -> tuple[dict[str, Any], list[Path]]:
    """A finished sharded dataset's manifest and its shard paths, checked: the manifest has the
    shape we write, names only files inside ``folder``, and (with ``verify``) every shard's sha256
    is the one recorded, so a shard replaced by another run's, truncated or tampered with is
    refused instead of read."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise DataError(f"{folder} has no {MANIFEST}: it is not a finished construction (finish it with `advfeatures construct`)")
    manifest = read_json(folder / MANIFEST)
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(shards, list) or not shards or not all(
            isinstance(s, dict) and isinstance(s.get("file"), str) and isinstance(s.get("sha256"), str) for s in shards):
        raise DataError(f"{folder / MANIFEST} is not a manifest of ours (no list of shards with file and sha256); rebuild the folder")
    paths = []
    for s in shards:
        name = s["file"]
        if Path(name).name != name or name in ("", ".", ".."):
            raise DataError(f"{folder / MANIFEST} names a shard outside its folder ({name!r}); refusing it")
        p = folder / name
        if not p.is_file():
            raise DataError(f"{p} is missing; the construction in {folder} is incomplete: delete the folder and rebuild it")
        if verify and file_sha256(p) != s["sha256"]:
            raise DataError(f"{p} does not match the sha256 in its manifest (replaced, truncated or tampered with); "
                            "delete the folder and rebuild it")
        paths.append(p)
    return manifest, paths


def read_sharded(folder: str | Path, *, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A finished sharded dataset's tensors (each key across shards) and its manifest, every shard
    verified against the manifest's sha256 (see :func:`read_manifest`)."""
    manifest, paths = read_manifest(folder, verify=verify)
    return read_shards(paths), manifest


def iter_chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


# ---- reading rows of large arrays without holding them ---------------------------------------
# Positioned reads (os.pread), not memory maps: the pages of a mapped file that a process touches
# count in its resident memory until it unmaps them, so an epoch over a mapped 10 GB array would
# look like a 10 GB process. A read copies just the rows asked for, and nothing stays behind.

_SAFETENSORS_DTYPES = {"U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
                       "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
                       "BOOL": torch.bool}


@dataclass(frozen=True)
class RowFile:
    """An array stored row-major in a file: ``shape[0]`` rows of ``prod(shape[1:])`` values from
    byte ``offset`` on, little-endian ``dtype``."""

    path: Path
    offset: int
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * torch.empty((), dtype=self.dtype).element_size()

    def read_rows(self, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` (any order, repeats allowed) as a new tensor; consecutive rows are read at once."""
        index = torch.as_tensor(index, dtype=torch.int64).flatten()
        n = self.shape[0]
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
            raise DataError(f"row index out of range for {self.path} ({n} rows)")
        uniq, inverse = torch.unique(index, sorted=True, return_inverse=True)
        out = torch.empty((uniq.numel(), *self.shape[1:]), dtype=self.dtype)
        flat = out.view(torch.uint8).view(-1) if uniq.numel() else out
        rb = self.row_bytes
        if uniq.numel():
            breaks = (uniq[1:] - uniq[:-1] != 1).nonzero().flatten() + 1
            starts = torch.cat([torch.zeros(1, dtype=torch.int64), breaks]).tolist()
            ends = torch.cat([breaks, torch.tensor([uniq.numel()])]).tolist()
            rows = uniq.tolist()
            fd = os.open(self.path, os.O_RDONLY)
            try:
                for s, e in zip(starts, ends):
                    want = (e - s) * rb
                    got = os.preadv(fd, [memoryview(flat[s * rb: e * rb].numpy())], self.offset + rows[s] * rb)
                    if got != want:
                        raise DataError(f"{self.path} is truncated: wanted {want} bytes at row {rows[s]}, read {got}")
            finally:
                os.close(fd)
        return out if torch.equal(inverse, torch.arange(index.numel())) else out[inverse]


def safetensors_layout(path: str | Path) -> dict[str, RowFile]:
    """Where each tensor of a safetensors file lies (the format: an 8-byte little-endian header
    length, a JSON header of dtype/shape/byte offsets, then the data)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = int.from_bytes(head, "little") if len(head) == 8 else -1
            header = json.loads(f.read(size)) if 0 < size < 100_000_000 else None
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except (OSError, ValueError):
        header = None
    if not isinstance(header, dict):
        raise DataError(f"{path} is not a readable safetensors file; delete it and rebuild")
    out = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        if meta.get("dtype") not in _SAFETENSORS_DTYPES:
            raise DataError(f"{path}: tensor {key!r} has an unsupported dtype {meta.get('dtype')!r}")
        out[key] = RowFile(path, 8 + size + int(meta["data_offsets"][0]), tuple(int(s) for s in meta["shape"]),
                           _SAFETENSORS_DTYPES[meta["dtype"]])
    return out


# ---- one run per output folder ----------------------------------------------------------------
LOCK = ".advfeatures.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    except (OverflowError, ValueError):
        return False
    return True


@contextmanager
def folder_lock(folder: str | Path, *, what: str = "run", name: str = LOCK):
    """Hold ``folder`` for this process: two runs writing one output folder would interleave
    shards, checkpoints and results, so a second one is refused with one line while the first lives.

    The lock is a file ``name`` in ``folder`` made with ``O_EXCL`` holding the owner's host and PID
    (a run writing one file of a shared folder, ``train --out``, names its lock after that file); a
    lock whose process is gone (killed with SIGKILL, say) is stale and taken over, so an interrupted
    run never blocks its own rerun. A folder the lock had to create is removed again on release if
    the run left it empty, so a refused run leaves nothing behind.
    """
    import socket

    folder = Path(folder)
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataError(f"{folder} is a file, not a folder; choose another --out") from None
    path = folder / name
    me = f"{socket.gethostname()} {os.getpid()}\n"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                host, pid_text = path.read_text(encoding="utf-8", errors="replace").split()[:2]
                pid = int(pid_text)
            except (OSError, ValueError):
                host, pid = socket.gethostname(), -1  # unreadable or half-written: stale
            if host == socket.gethostname() and pid != os.getpid() and _pid_alive(pid):
                raise DataError(f"{folder} is in use by another {what} (process {pid}); wait for it to finish "
                                f"or choose another --out") from None
            if host != socket.gethostname():
                raise DataError(f"{folder} is in use by a {what} on {host} (process {pid}); wait for it, or delete "
                                f"{path} if that run is gone") from None
            try:
                path.unlink()  # stale: its process is gone
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(me)
        break
    else:
        raise DataError(f"could not take the lock {path}; another run keeps taking it: choose another --out")
    try:
        yield path
    finally:
        try:
            if path.read_text(encoding="utf-8") == me:
                path.unlink()
        except OSError:
            pass
        if made:
            try:
                folder.rmdir()  # only if empty
            except OSError:
                pass


# ---- fault injection for the interruption tests -----------------------------------------------
FAULT_ENV = "ADVFEATURES_FAULT"


_writes = 0  # atomic writes so far in this process (the ``write`` fault point's index)


def fault_point(stage: str, index: int) -> None:
    """Interrupt this process when ``$ADVFEATURES_FAULT`` is ``stage:index`` (SIGKILL) or
    ``stage:index:int`` (SIGINT, a Ctrl-C): ``epoch:2`` lands right after epoch 2's checkpoint,
    ``shard:1`` after shard 1 is on disk, ``write:3`` in the middle of the process's fourth atomic
    write (its temporary file written, not yet renamed). The tests interrupt a run at a known place
    and check that rerunning it gives the same result as never stopping. Unset (always, outside
    those tests), it does nothing."""
    want = os.environ.get(FAULT_ENV)
    if not want:
        return
    import signal

    parts = want.split(":")
    if parts[:2] == [stage, str(index)]:
        os.kill(os.getpid(), signal.SIGINT if parts[2:] == ["int"] else signal.SIGKILL)
