"""One runtime configuration, one function that applies it.

Every entry point (``reproduce``, ``train``, every command, a user's script) describes where and how
fast to compute with one :class:`RuntimeConfig` and calls :func:`apply_runtime` once at its start::

    rt = apply_runtime(RuntimeConfig(device="auto", threads=None))
    model = rt.accelerate(model.to(rt.device))
    ...
    rt.restore()  # torch's thread count as it was before

    with runtime_applied(RuntimeConfig(threads=1)) as rt:  # the same, restored on leaving
        ...

:func:`apply_runtime` tunes the allocator (unless ``tune_allocator=False``), sets torch's thread
count, joins ``torchrun``'s process group when the environment describes one, and resolves the
device. It returns a :class:`Runtime`: what was applied, for the record (``as_dict`` goes into
results and benchmark JSON).

``threads=None`` means one thing everywhere (a command without ``--threads``, a reproduce preset or
``ReproduceConfig`` without ``threads``, a script): the cores not busy with other work, at least
one, at most torch's own default, and ``OMP_NUM_THREADS`` when it is set
(:func:`.threads.default_threads`). It is resolved in one place, :func:`.threads.set_threads`,
which :func:`apply_runtime` calls.

Where the command line uses it: every command calls
:func:`advfeatures.cli.options.start_runtime` once at its start, which builds this configuration
from the global ``--threads``, the command's ``--device`` and speed options, and applies it;
``reproduce`` builds it from its resolved configuration (``ReproduceConfig.runtime``) and hands the
applied :class:`Runtime` to the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .device import DEFAULT_DEVICE, check_device_name

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .group import DistContext


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how fast to compute. Every field changes speed only, never results beyond float
    rounding (bf16: bf16 rounding, hence off by default). Each field's ``metadata["help"]`` is the
    help text of its command-line option (:func:`runtime_options`)."""

    device: str = _opt(DEFAULT_DEVICE, "Where to compute: auto (the GPU when one is visible), cpu, cuda or cuda:N.",
                       choices=("auto", "cpu", "cuda"))
    threads: int | None = _opt(None, "CPU threads for torch (default: the cores not busy with other work, at least 1; "
                                     "OMP_NUM_THREADS wins).")
    compile: bool = _opt(False, "Run the model through torch.compile (speed only).")
    bf16: bool = _opt(False, "bf16 autocast (faster on recent hardware; results change by bf16 rounding).")
    channels_last: bool = _opt(False, "Channels-last weights and inputs (speed only).")
    tune_allocator: bool = _opt(True, "Raise glibc malloc's thresholds (ADVFEATURES_MALLOC=default turns it off).")
    distributed: bool = _opt(True, "Join torchrun's process group when the environment describes one.")

    @classmethod
    def from_options(cls, **options: Any) -> RuntimeConfig:
        """A checked configuration from command-line values: ``None`` means "the default", an
        unknown name is an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise ConfigError(f"unknown runtime option {unknown[0]!r}; known: {', '.join(sorted(names))}")
        return cls(**{k: v for k, v in options.items() if v is not None}).validate()

    def validate(self) -> RuntimeConfig:
        check_device_name(self.device)
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"threads must be a whole number ≥ 1 (or unset for the free cores), got {self.threads!r}")
        for name in ("compile", "bf16", "channels_last", "tune_allocator", "distributed"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        return self

    @property
    def speed_options(self) -> dict[str, bool]:
        """The keyword arguments of :func:`~.speed.accelerate` (and ``train_model``'s speed options)."""
        return {"compile": self.compile, "bf16": self.bf16, "channels_last": self.channels_last}


@dataclass(frozen=True)
class Runtime:
    """What :func:`apply_runtime` set up."""

    config: RuntimeConfig
    device: torch.device
    threads: int
    context: DistContext
    allocator: dict[str, Any] | None = field(default=None)
    threads_before: int | None = field(default=None, compare=False)  # torch's count before, for restore()

    def restore(self) -> None:
        """Give torch back the thread count it had before :func:`apply_runtime` (the allocator
        settings and the process group stay)."""
        if self.threads_before is not None:
            import torch

            torch.set_num_threads(self.threads_before)

    def accelerate(self, model: nn.Module) -> nn.Module:
        """``model`` wrapped with the configuration's speed options (itself when all are off)."""
        from .speed import accelerate

        return accelerate(model, device=self.device, **self.config.speed_options)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self.config), "device": str(self.device), "threads": self.threads,
                "rank": self.context.rank, "world_size": self.context.world_size, "allocator": self.allocator}


def runtime_options() -> list[dict[str, Any]]:
    """One row per :class:`RuntimeConfig` field (name, type, default, help, choices): the single
    table that the command line's shared options are made from, so parser and checker agree."""
    import typing

    hints = typing.get_type_hints(RuntimeConfig)
    rows = []
    for f in fields(RuntimeConfig):
        tp = hints[f.name]
        base = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
        rows.append({"name": f.name, "option": "--" + f.name.replace("_", "-"), "type": base, "default": f.default,
                     "help": f.metadata["help"], "choices": f.metadata.get("choices")})
    return rows


def apply_runtime(config: RuntimeConfig | None = None) -> Runtime:
    """Apply ``config`` to this process (allocator, threads, process group, device); see the module
    docstring. Safe to call again: a second call re-applies the thread count and returns the same
    device and group."""
    config = (config or RuntimeConfig()).validate()
    from .allocator import tune_allocator
    from .group import DistContext, init_distributed
    from .device import resolve_device
    from .threads import set_threads

    import torch

    tuned = tune_allocator() if config.tune_allocator else None
    before = torch.get_num_threads()
    n = set_threads(config.threads)
    if config.distributed:
        ctx, dev = init_distributed(config.device)
    else:
        ctx, dev = DistContext(), resolve_device(config.device)
    if config.compile:
        from .speed import compile_available

        ok, why = compile_available()
        if not ok:
            raise ConfigError(f"compile was asked for but {why}; install one or turn compile off")
    return Runtime(config=config, device=dev, threads=n, context=ctx, allocator=tuned, threads_before=before)


@contextmanager
def runtime_applied(config: RuntimeConfig | None = None) -> Iterator[Runtime]:
    """:func:`apply_runtime` for a block; torch's thread count is restored when it ends."""
    rt = apply_runtime(config)
    try:
        yield rt
    finally:
        rt.restore()
