"""The ``advfeatures`` command-line tool.

Each subcommand lives in a module of this package and registers itself on :data:`main`. Modules
are imported only when their command runs (or shows its own help), so ``advfeatures --help`` lists
the commands without importing torch; :data:`COMMANDS` names each command's module and its one-line
summary (a test checks that the summary is the first line of the command's own docstring).
Errors the library raises on purpose (:class:`~advfeatures.errors.AdvFeaturesError`) are printed
as one line and end the process with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import importlib
import logging
import sys

import click

from ..errors import AdvFeaturesError, ConfigError
from ..validate import _option_name, whole_int

# command name -> (module in this package, one-line summary shown by `advfeatures --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "reproduce": ("reproduce", "The paper end to end: models, D_R, D_NR, D_rand and D_det, a model on each, the report."),
    "train": ("train", "Train a model (ours or your own architecture) on any supported data, standard or adversarially."),
    "attack": ("attack", "Run one attack on a saved model and report its success rate and robust accuracy."),
    "evaluate": ("attack", "Worst-case robust accuracy under AutoAttack's ensemble (APGD-CE, APGD-T, FAB-T, Square), and the sanity checks."),
    "construct": ("construct", "Build one of the paper's four training sets, shard by shard (resumable; torchrun shards it by example index)."),
    "export": ("export", "Write a dataset (built-in, your own, or a constructed one) as an ImageFolder, .npz or MadryLab tensors."),
    "invert": ("represent", "Recover images from their representations g(x), standard vs robust."),
    "visualize": ("represent", "Maximise representation coordinates; feature addition; units vs directions."),
    "generate": ("represent", "Class-conditional generation from one robust classifier."),
    "saliency": ("represent", "Saliency maps and the cascading-randomisation sanity check."),
    "transfer": ("represent", "Transfer source representations to --dataset: linear probe and fine-tuning."),
    "planted": ("science", "The planted-features benchmark: which feature D_R, D_NR, D_rand and D_det keep, with ground truth."),
    "leakage": ("science", "Robust-feature leakage: how much of a constructed set's accuracy a linear model on robust features recovers."),
    "distill": ("science", "Distillation control: train a fresh model only on a teacher's mistakes, with its wrong labels."),
    "transferability": ("science", "Transferability vs learning from D_rand across architectures (Ilyas et al., Fig. 3)."),
    "certify": ("defences", "Certified accuracy of a saved model: IBP (Linf) or randomized smoothing (L2)."),
    "physical": ("defences", "Destruction rates (Kurakin et al. 2017) of simulated print-and-photograph transformations."),
    "defences": ("defences", "Train every defence on one dataset and write the defence table (clean, robust, certified, cost)."),
    "theory": ("theory", "Simulate the two-Gaussian, Tsipras and logistic models and check them against their closed forms."),
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")
        command = self.commands.get(name)
        if command is not None:
            check_numbers_at_the_door(command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # the summaries from the table, so that listing the commands imports none of their modules
        rows = [(name, COMMANDS[name][1] if name in COMMANDS else (self.commands[name].get_short_help_str()))
                for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:  # the group's own options (--threads): their refusals are one line too
            return super().parse_args(ctx, args)
        except AdvFeaturesError as exc:
            click.echo(f"error: {_one_line(exc)}", err=True)
            sys.exit(2)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AdvFeaturesError as exc:
            click.echo(f"error: {_one_line(exc)}", err=True)
            sys.exit(2)
        except BAD_FILE_ERRORS as exc:
            # a safety net under the readers (which should raise DataError themselves): these
            # families only arise from reading a malformed or truncated file given as input
            click.echo(f"error: an input file is malformed or truncated ({type(exc).__name__}: {_one_line(exc)}); "
                       "check the files given to this command, or delete and rebuild them", err=True)
            sys.exit(2)
        except RecursionError:
            click.echo("error: an input file is nested too deeply to read (a crafted or corrupt JSON/TOML file?); "
                       "fix or replace it", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            # every file is written to a temporary name and renamed (advfeatures.storage), so a Ctrl-C
            # leaves the finished files and checkpoints only; the conventional status of SIGINT
            click.echo("error: interrupted (Ctrl-C); nothing half-written was kept: run the same command again to "
                       "resume", err=True)
            sys.exit(130)
        except OSError as exc:
            click.echo(f"error: {os_error_line(exc)}", err=True)
            sys.exit(2)


_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def os_error_line(exc: OSError) -> str:
    """One line for an error of the file system (a full disk, a read-only or missing folder): what
    failed, on which file, and what to do. Files are written atomically, so a write that failed
    half-way left only its temporary file, which is removed."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in _NO_SPACE:
        return (f"the disk is full or a file size limit was reached{where}: {exc.strerror or exc}; nothing half-written "
                "was kept: free some space and run the same command again")
    what = exc.strerror or type(exc).__name__
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied{where}: {what}; choose a folder you can write (and files you can read)"
    return f"a file system error{where}: {what}; check the paths given to this command"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] + ("…" if len(text) > 500 else "")


def _bad_file_errors() -> tuple[type[BaseException], ...]:
    """Exception families that only a malformed input file raises (from gzip, pickle, zip, UTF-8,
    TOML and safetensors readers), without importing torch or safetensors for ``--help``."""
    import gzip
    import pickle
    import tomllib
    import zipfile
    import zlib

    return (pickle.UnpicklingError, gzip.BadGzipFile, zlib.error, zipfile.BadZipFile, EOFError, UnicodeDecodeError,
            tomllib.TOMLDecodeError)


BAD_FILE_ERRORS = _bad_file_errors()

# Plain float and int options are quantities (radii, step sizes, rates, counts): none may be nan,
# infinite, or ≤ 0. Options that allow 0 or negatives say so with click.IntRange/FloatRange.
_INT_MAX = 2**63 - 1


def check_numbers_at_the_door(command: click.Command) -> None:
    """Give every plain ``float`` option of ``command`` a type refusing nan, ±inf and values ≤ 0,
    every plain ``int`` option a type refusing values < 1, and every open-ended int range an upper
    bound of 2^63 − 1 (what torch takes), so bad numbers fail as click usage errors (exit 2, one
    line) before the command runs."""
    if getattr(command, "_numbers_checked", False):
        return
    from ..validate import finite_float, whole_int

    for param in command.params:
        if not isinstance(param, click.Option) or param.is_flag:
            continue
        if param.type is click.FLOAT:
            param.type = finite_float(is_positive=True)
        elif param.type is click.INT and param.name != "threads":
            param.type = whole_int(0 if param.name == "seed" else 1, _INT_MAX)
        elif isinstance(param.type, click.IntRange) and not param.type.min_open and not param.type.max_open:
            param.type = whole_int(param.type.min, param.type.max if param.type.max is not None else _INT_MAX)
        elif isinstance(param.type, (click.Path, click.types.StringParamType)):
            param.type = _non_empty(param.type)
    if command.callback is not None:
        command.callback = _refusing_out_over_inputs(command)
    command._numbers_checked = True  # type: ignore[attr-defined]


# files whose contents an input is made of (not results a command may write again beside it)
_DATA_SUFFIXES = (".npy", ".npz", ".safetensors", ".pt", ".pth", ".ckpt", ".png", ".jpg", ".jpeg", ".toml")


def _refusing_out_over_inputs(command: click.Command):
    """``command``'s callback refusing an ``--out`` (or train's ``.json`` summary beside it) that
    would overwrite one of the command's own inputs: a file given as an input option, or a data file
    (or a construction's manifest) inside a folder given as one. ``attack --out`` on its --model
    replaced the model with JSON; ``train --out`` on its --data replaced the data with a model.
    ``train --model M --out M`` (fine-tuning in place: M is read whole first) stays allowed."""
    import functools
    from pathlib import Path

    callback = command.callback
    inputs = {p.name: p.opts[0] for p in command.params if isinstance(p, click.Option) and p.name not in ("out", "save_adv")
              and (isinstance(p.type, click.Path) or p.name in ("data", "data_root"))}

    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        out = kwargs.get("out")
        if out is not None and str(out).strip():
            outs = [Path(out)] + ([Path(out).with_suffix(".json")] if command.name == "train" else [])
            for name, option in inputs.items():
                values = kwargs.get(name)
                for given in values if isinstance(values, (list, tuple)) else [values]:
                    if given is None or not str(given).strip() or "\x00" in str(given):
                        continue
                    src = _resolved(given)
                    for o in outs:
                        target = _resolved(o)
                        if src is None or target is None:  # a symlink loop: the command's own check names it
                            continue
                        if o == Path(out) and name == "init_model" and command.name == "train":
                            continue
                        inside = src.is_dir() and src in target.parents and target.is_file() and (
                            target.suffix.lower() in _DATA_SUFFIXES or target.name == "manifest.json")
                        if (target == src and src.is_file()) or inside:
                            raise ConfigError(f"--out {out} would overwrite {target} of {option} {given}, an input of this "
                                              "command; choose another --out")
        return callback(*args, **kwargs)

    return wrapper


def _resolved(path):
    """``path`` resolved, or None where it cannot be (a symlink loop raises RuntimeError on 3.11)."""
    from pathlib import Path

    try:
        return Path(path).resolve()
    except (RuntimeError, OSError):
        return None


def _non_empty(inner: click.ParamType) -> click.ParamType:
    """``inner`` refusing an empty value and a NUL character (one line each): no path or name is
    empty (``--out ''`` wrote into the current folder), and no file name holds a NUL."""

    class NonEmpty(type(inner)):  # type: ignore[misc]
        def convert(self, value, param, ctx):
            if isinstance(value, str) and (not value.strip() or "\x00" in value):
                what = "empty" if not value.strip() else "a NUL character"
                raise ConfigError(f"{_option_name(param)} is {what}; give a value")
            return super().convert(value, param, ctx)

    checked = NonEmpty.__new__(NonEmpty)
    checked.__dict__.update(inner.__dict__)
    return checked






@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="advfeatures")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors in the log; no progress bars.")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
@click.option("--threads", type=whole_int(1, 4096), default=None, metavar="N",
              help="Torch CPU threads for this command [default: the cores not busy with other work (OMP_NUM_THREADS "
                   "wins); reproduce then takes its preset's]. On a busy machine 1 is often fastest for small models.")
@click.pass_context
def main(ctx: click.Context, quiet: bool, verbose: bool, threads: int | None) -> None:
    """advfeatures: adversarial examples as features (Ilyas et al. 2019) and the tools around them."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    ctx.obj["threads"] = threads
    from ..progress import set_progress_enabled

    set_progress_enabled(not quiet)
    # --threads (and the allocator settings) are applied by the command itself, with its --device,
    # in one call: options.start_runtime → advfeatures.runtime.apply_runtime


def threads_given() -> int | None:
    """The global ``--threads`` of the running command (None when not given or outside the CLI)."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj.get("threads") if isinstance(obj, dict) else None


__all__ = ["COMMANDS", "ConfigError", "main", "threads_given"]
