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

from ..errors import ConfigError
from . import main

_DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10")


def _device(name: str):
    from ..distributed import resolve_device

    return resolve_device(name)


def parse_arch_option(text: str) -> tuple[str, dict[str, Any]]:
    """``"cnn:width=16,hidden=64"`` → ("cnn", {"width": 16, "hidden": 64}); ``"mlp:hidden=256x256"``
    gives hidden=[256, 256] and ``"mlp:hidden=64"`` hidden=[64]."""
    name, _, rest = text.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"bad architecture option {text!r}: write NAME or NAME:key=value,key=value (e.g. cnn:width=16)")
        kwargs[key.strip()] = _value(value.strip(), text)
    if not name:
        raise ConfigError(f"bad architecture option {text!r}: it needs a model name first (e.g. cnn:width=16)")
    if name.strip() == "mlp" and isinstance(kwargs.get("hidden"), int):
        kwargs["hidden"] = [kwargs["hidden"]]  # an MLP's hidden sizes are a list: mlp:hidden=64 means one layer
    return name.strip(), kwargs


def _value(text: str, whole: str) -> Any:
    if "x" in text:
        return [_value(part, whole) for part in text.split("x")]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("true", "false"):
        return text == "true"
    raise ConfigError(f"bad value {text!r} in architecture option {whole!r}: use numbers, NxM lists, true or false")


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


_dataset_opt = click.option("--dataset", type=click.Choice(_DATASETS), default="digits", show_default=True)
_root_opt = click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
                         help="Folder of the dataset files (defaults per dataset).")
_seed_opt = click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
_device_opt = click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto", show_default=True)


@main.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for planted.json, the figures and the constructed sets.")
@click.option("--quick", is_flag=True, help="12×12 images, 4 classes, 600 training images (about half a minute on one core).")
@_seed_opt
@_device_opt
def planted(out: Path, quick: bool, seed: int, device: str) -> None:
    """The planted-features benchmark: which feature D_R, D_NR, D_rand and D_det keep, with ground truth."""
    from ..science.planted import run_planted

    res = run_planted(out, seed=seed, quick=quick, device=_device(device))
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
@_dataset_opt
@_root_opt
@click.option("--eps", required=True, type=float, help="The construction's ε (for the certified bounds).")
@click.option("--norm", default="L2", show_default=True, type=click.Choice(["L2", "Linf", "L1"]))
@click.option("--k", "k", default=10, show_default=True, type=click.IntRange(min=1), help="Principal components used as robust features.")
@click.option("--features", default="pca", show_default=True, type=click.Choice(["pca", "robust_linear"]))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the audit as JSON here.")
def leakage(constructed: Path, dataset: str, data_root: Path | None, eps: float, norm: str, k: int, features: str, out: Path | None) -> None:
    """Robust-feature leakage: how much of a constructed set's accuracy a linear model on robust features recovers."""
    from ..construct import load_constructed
    from ..data import load_dataset
    from ..science.leakage import leakage_audit
    from ..storage import write_json_atomic

    train, test = load_dataset(dataset, root=data_root)
    data, manifest = load_constructed(constructed, classes=train.classes, name=constructed.name)
    res = leakage_audit(data, train, test, eps=eps, norm=norm, k=k, features=features)
    res["constructed"] = {"folder": str(constructed), "kind": manifest.get("kind")}
    if out is not None:
        write_json_atomic(out, res)
        click.echo(f"wrote {out}")
    click.echo(f"linear classifier on {res['k']} {features} features, real test accuracy: trained on {constructed.name} "
               f"{res['leakage_accuracy']:.3f}, trained on the real data {res['real_accuracy']:.3f}, chance {res['chance']:.3f}")


@main.command()
@_dataset_opt
@_root_opt
@click.option("--arch", default="cnn:width=16,hidden=64", show_default=True, help="Teacher and student architecture, NAME[:key=value,...].")
@click.option("--teacher", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A saved model whose mistakes to use (default: train a weak teacher).")
@click.option("--teacher-epochs", default=2, show_default=True, type=click.IntRange(min=1), help="Epochs of the weak teacher.")
@_train_options
@_seed_opt
@_device_opt
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for distill.json.")
def distill(dataset, data_root, arch, teacher, teacher_epochs, epochs, batch_size, lr, crop_padding, flip, seed, device, out) -> None:
    """Distillation control: train a fresh model only on a teacher's mistakes, with its wrong labels."""
    from ..data import load_dataset
    from ..models import load_model
    from ..science.distill import distillation_control
    from ..storage import write_json_atomic

    dev = _device(device)
    train, test = load_dataset(dataset, root=data_root)
    name, kwargs = parse_arch_option(arch)
    model = load_model(teacher, device=dev) if teacher else None
    res = distillation_control(model, train, test, arch=name, arch_kwargs=kwargs, teacher_epochs=teacher_epochs,
                               train_cfg=_train_cfg(epochs, batch_size, lr, crop_padding, flip, seed), seed=seed, device=dev)
    write_json_atomic(out / "distill.json", res)
    click.echo(f"wrote {out / 'distill.json'}")
    if not res["trained"]:
        click.echo(res["note"])
        return
    click.echo(f"teacher {res['teacher']['test_accuracy']:.3f} on test; {res['mistakes']} mistakes; student on them "
               f"{res['student_test_accuracy']:.3f} (random wrong labels {res.get('control_random_wrong_labels_test_accuracy', float('nan')):.3f}, "
               f"chance {res['chance']:.3f})")


@main.command("transferability")
@click.option("--source", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path), help="The model D_rand was built with.")
@click.option("--d-rand", "d_rand", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path), help="A finished D_rand folder.")
@_dataset_opt
@_root_opt
@click.option("--arch", "archs", multiple=True, required=True, help="An architecture to test, NAME[:key=value,...]; repeat it.")
@_train_options
@click.option("--eps", default=0.5, show_default=True, type=float, help="L2 radius of the source's adversarial examples.")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--step-size", default=None, type=float, help="PGD step (default 2.5·ε/steps).")
@click.option("--n-attack", default=500, show_default=True, type=click.IntRange(min=1), help="Test images attacked.")
@_seed_opt
@_device_opt
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for transfer.json and transfer.png.")
def transfer(source, d_rand, dataset, data_root, archs, epochs, batch_size, lr, crop_padding, flip, eps, steps, step_size, n_attack,
             seed, device, out) -> None:
    """Transferability vs learning from D_rand across architectures (Ilyas et al., Fig. 3)."""
    from ..construct import load_constructed
    from ..data import load_dataset
    from ..models import load_model
    from ..science.transfer import plot_transfer, transfer_experiment
    from ..storage import write_json_atomic

    dev = _device(device)
    train, test = load_dataset(dataset, root=data_root)
    rand, _ = load_constructed(d_rand, classes=train.classes, name="d_rand")
    res = transfer_experiment(load_model(source, device=dev), train, test, rand, archs=[parse_arch_option(a) for a in archs],
                              train_cfg=_train_cfg(epochs, batch_size, lr, crop_padding, flip, seed), eps=eps, steps=steps,
                              step_size=step_size, n_attack=n_attack, seed=seed, device=dev)
    write_json_atomic(out / "transfer.json", res)
    plot_transfer(res, out / "transfer.png")
    click.echo(f"wrote {out / 'transfer.json'} and {out / 'transfer.png'}")
    click.echo(f"{'architecture':32s} {'transfer (targeted)':>20s} {'(untargeted)':>13s} {'D_rand → test acc':>18s}")
    for row in res["archs"]:
        t, u = row["transfer_targeted"], row["transfer_untargeted"]
        click.echo(f"{row['label']:32s} {t if t is not None else float('nan'):20.3f} {u if u is not None else float('nan'):13.3f} "
                   f"{row['d_rand_test_accuracy']:18.3f}")
