"""The experiments around the paper: ``planted``, ``leakage``, ``distill`` and ``transferability``.

    advfeatures planted --out runs/planted --quick
    advfeatures leakage --constructed runs/digits/d_rand --dataset digits --eps 1.5 --out leakage.json
    advfeatures distill --dataset digits --arch cnn:width=16,hidden=64 --epochs 30 --out runs/distill
    advfeatures transferability --source runs/digits/standard.safetensors --d-rand runs/digits/d_rand --dataset digits \\
        --arch mlp:hidden=256x256 --arch cnn:width=16,hidden=64 --eps 1.5 --steps 50 --out runs/transfer

Each writes JSON (and figures) atomically into its output and prints a short summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from . import main
from .options import data_options, device_option, parse_arch_option, seed_option, start_runtime, write_result

def _train_options(fn):
    for opt in reversed([
        click.option("--epochs", default=30, show_default=True, type=click.IntRange(min=1), help="Training epochs of every model."),
        click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1)),
        click.option("--lr", default=0.05, show_default=True, type=float, help="SGD learning rate (×0.1 at 1/3 and 2/3)."),
        click.option("--crop-padding", default=1, show_default=True, type=click.IntRange(min=0), help="Random-crop padding."),
        click.option("--flip/--no-flip", default=False, show_default=True, help="Random horizontal flips."),
    ]):
        fn = opt(fn)
    return fn


def _train_cfg(epochs: int, batch_size: int, lr: float, crop_padding: int, flip: bool, seed: int):
    from ..train import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, crop_padding=crop_padding, flip=flip, seed=seed)


_DATA = data_options("Dataset the experiment runs on.")


@main.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for planted.json, the figures and the constructed sets.")
@click.option("--quick", is_flag=True, help="12×12 images, 4 classes, 600 training images (about half a minute on one core).")
@seed_option
@device_option
def planted(out: Path, quick: bool, seed: int, device: str) -> None:
    """The planted-features benchmark: which feature D_R, D_NR, D_rand and D_det keep, with ground truth."""
    from ..science.planted import run_planted

    res = run_planted(out, seed=seed, quick=quick, device=start_runtime(device).device)
    click.echo(f"wrote {out / 'planted.json'}, {res['figures']['summary']} and {res['figures']['examples']}")
    click.echo(f"{'set':8s} {'robust share':>13s} {'non-robust share':>17s} {'model: follows robust':>22s} {'follows non-robust':>19s}")
    for name, sig in res["signal"].items():
        model = res["constructed"].get(name, {}).get("model")
        swap = f"{model['swap']['follows_robust']:22.3f} {model['swap']['follows_non_robust']:19.3f}" if model else ""
        click.echo(f"{name:8s} {sig['robust']['share']:13.3f} {sig['non_robust']['share']:17.3f} {swap}")
    failed = [k for k, ok in res["checks"].items() if not ok]
    click.echo("all ground-truth checks hold" if not failed else f"checks that failed: {', '.join(failed)}")


@main.command()
@click.option("--constructed", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path), help="A finished D_rand / D_det folder.")
@_DATA
@click.option("--eps", required=True, type=float, help="The construction's ε (for the certified bounds).")
@click.option("--norm", default="L2", show_default=True, type=click.Choice(["L2", "Linf", "L1"]))
@click.option("--k", "k", default=10, show_default=True, type=click.IntRange(min=1), help="Principal components used as robust features.")
@click.option("--features", default="pca", show_default=True, type=click.Choice(["pca", "robust_linear"]))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the audit as JSON here.")
def leakage(constructed: Path, source, eps: float, norm: str, k: int, features: str, out: Path | None) -> None:
    """Robust-feature leakage: how much of a constructed set's accuracy a linear model on robust features recovers."""
    from ..construct import check_built_from, load_constructed
    from ..science.leakage import leakage_audit

    start_runtime("cpu")
    train, test = source.load()
    data, manifest = load_constructed(constructed, classes=train.classes, name=constructed.name)
    check_built_from(constructed, manifest, train)  # the audit's baselines are of the data given
    res = leakage_audit(data, train, test, eps=eps, norm=norm, k=k, features=features)
    res["constructed"] = {"folder": str(constructed), "kind": manifest.get("kind")}
    if out is not None:
        write_result(out, res)
        click.echo(f"wrote {out}")
    click.echo(f"linear classifier on {res['k']} {features} features, real test accuracy: trained on {constructed.name} "
               f"{res['leakage_accuracy']:.3f}, trained on the real data {res['real_accuracy']:.3f}, chance {res['chance']:.3f}")


@main.command()
@_DATA
@click.option("--arch", default="cnn:width=16,hidden=64", show_default=True, help="Teacher and student architecture, NAME[:key=value,...].")
@click.option("--teacher", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A model file whose mistakes to use (default: train a weak teacher); read as --model is elsewhere.")
@click.option("--teacher-arch", default=None, metavar="NAME|MODULE:FACTORY", help="Architecture of a --teacher file that does not record one.")
@click.option("--teacher-epochs", default=2, show_default=True, type=click.IntRange(min=1), help="Epochs of the weak teacher.")
@_train_options
@seed_option
@device_option
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for distill.json.")
def distill(source, arch, teacher, teacher_arch, teacher_epochs, epochs, batch_size, lr, crop_padding, flip, seed, device, out) -> None:
    """Distillation control: train a fresh model only on a teacher's mistakes, with its wrong labels."""
    from ..science.distill import distillation_control
    from .options import ModelLoader

    dev = start_runtime(device).device
    train, test = source.load(seed=seed)
    name, kwargs = parse_arch_option(arch)
    teacher_loader = ModelLoader(*parse_arch_option(teacher_arch)) if teacher_arch else ModelLoader()
    model = teacher_loader.load(teacher, dev, train)
    res = distillation_control(model, train, test, arch=name, arch_kwargs=kwargs, teacher_epochs=teacher_epochs,
                               train_cfg=_train_cfg(epochs, batch_size, lr, crop_padding, flip, seed), seed=seed, device=dev)
    write_result(out / "distill.json", res)
    click.echo(f"wrote {out / 'distill.json'}")
    if not res["trained"]:
        click.echo(res["note"])
        return
    click.echo(f"teacher {res['teacher']['test_accuracy']:.3f} on test; {res['mistakes']} mistakes; student on them "
               f"{res['student_test_accuracy']:.3f} (random wrong labels {res.get('control_random_wrong_labels_test_accuracy', float('nan')):.3f}, "
               f"chance {res['chance']:.3f})")


@main.command("transferability")
@click.option("--source", "source_model", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path), help="The model D_rand was built with.")
@click.option("--d-rand", "d_rand", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path), help="A finished D_rand folder.")
@_DATA
@click.option("--test-arch", "--arch", "archs", multiple=True, required=True,
              help="An architecture to test, NAME[:key=value,...]; repeat it.")
@click.option("--source-arch", default=None, metavar="NAME|MODULE:FACTORY", help="Architecture of a --source file that does not record one.")
@_train_options
@click.option("--eps", default=0.5, show_default=True, type=float, help="L2 radius of the source's adversarial examples.")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--step-size", default=None, type=float, help="PGD step (default 2.5·ε/steps).")
@click.option("--n-attack", default=500, show_default=True, type=click.IntRange(min=1), help="Test images attacked.")
@seed_option
@device_option
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for transfer.json and transfer.png.")
def transfer(source_model, d_rand, source, archs, source_arch, epochs, batch_size, lr, crop_padding, flip, eps, steps, step_size, n_attack,
             seed, device, out) -> None:
    """Transferability vs learning from D_rand across architectures (Ilyas et al., Fig. 3)."""
    from ..construct import check_built_from, load_constructed
    from ..science.common import check_compatible
    from ..science.transfer import plot_transfer, transfer_experiment
    from .options import ModelLoader

    dev = start_runtime(device).device
    # the split construct used (its default): with --seed's split, data without a split of its own
    # would put some of D_rand's source images in the test set
    train, test = source.load()
    rand, manifest = load_constructed(d_rand, classes=train.classes, name="d_rand")
    check_built_from(d_rand, manifest, train)  # before any model is read
    check_compatible(rand, train, what=f"--d-rand {d_rand} and the data")  # before any model is read
    loader = ModelLoader(*parse_arch_option(source_arch)) if source_arch else ModelLoader()
    res = transfer_experiment(loader.load(source_model, dev, train), train, test, rand, archs=[parse_arch_option(a) for a in archs],
                              train_cfg=_train_cfg(epochs, batch_size, lr, crop_padding, flip, seed), eps=eps, steps=steps,
                              step_size=step_size, n_attack=n_attack, seed=seed, device=dev)
    write_result(out / "transfer.json", res)
    plot_transfer(res, out / "transfer.png")
    click.echo(f"wrote {out / 'transfer.json'} and {out / 'transfer.png'}")
    click.echo(f"{'architecture':32s} {'transfer (targeted)':>20s} {'(untargeted)':>13s} {'D_rand → test acc':>18s}")
    for row in res["archs"]:
        t, u = row["transfer_targeted"], row["transfer_untargeted"]
        click.echo(f"{row['label']:32s} {t if t is not None else float('nan'):20.3f} {u if u is not None else float('nan'):13.3f} "
                   f"{row['d_rand_test_accuracy']:18.3f}")
