"""The ``advfeatures`` command-line tool.

Each subcommand lives in its own module of this package and registers itself on :data:`main`.
Errors the library raises on purpose (:class:`~advfeatures.errors.AdvFeaturesError`) are printed
as one line and end the process with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from ..errors import AdvFeaturesError

# Modules (in this package) that define subcommands; each one imports `main` and decorates.
COMMAND_MODULES = [
    "reproduce",
    "attack",
    "theory",
    "represent",
    "science",
    "construct",
    "defences",
]


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AdvFeaturesError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="advfeatures")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors in the log; no progress bars.")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
@click.pass_context
def main(ctx: click.Context, quiet: bool, verbose: bool) -> None:
    """advfeatures: adversarial examples as features (Ilyas et al. 2019) and the tools around them."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    from ..distributed import tune_allocator
    from ..progress import set_progress_enabled

    set_progress_enabled(not quiet)
    # glibc's default malloc thresholds caused page-fault storms in CPU PyTorch on our machines
    # (benchmarks/RESULTS.md); ADVFEATURES_MALLOC=default or an explicit GLIBC_TUNABLES opts out.
    tune_allocator()


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
