"""``advfeatures train``: train a model, standard or PGD-adversarial, on any supported data.

    advfeatures train --arch cnn:width=16 --dataset digits --epochs 30 --lr 0.05 --out std.safetensors
    advfeatures train --arch mynets:SmallNet --arch-kwargs '{"width": 32}' --data ./my_images --adversarial \\
        --norm L2 --eps 0.5 --out robust.safetensors
    advfeatures train --model start.pt --arch resnet18 --data ./cifar_folder --preset cifar10 --stage adversarial --out r.safetensors

Settings come in the layers ``reproduce`` uses: the paper's defaults, a preset's training stage
(``--preset digits --stage adversarial``), a ``--config`` file of training settings, ``--set
key=value`` overrides (``--set adversary.steps=10``), then this command's own options. The run is
resumable: an interrupted command, run again with the same options, continues from the checkpoint
beside ``--out`` (removed once the model is written).
"""

from __future__ import annotations

from pathlib import Path

import click

from . import main
from .options import data_options, device_option, model_file_option, model_options, seed_option, start_runtime, write_result


@main.command("train")
@model_options
@model_file_option("--model", "init_model", required=False,
                   help="Start from these weights (any model file --model reads elsewhere) instead of a fresh --arch model.")
@data_options("Dataset to train on (its training split; accuracy is reported on its test split).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the trained model (.safetensors); a JSON summary is written beside it.")
@click.option("--preset", default=None,
              help="Start from this reproduce preset's settings for --stage (digits, fashion-mnist, mnist, cifar10) "
                   "[default: the built-in dataset's own preset; for your data, the one reproduce picks by image size].")
@click.option("--stage", default="standard", show_default=True,
              type=click.Choice(["standard", "adversarial", "train_d_r", "train_d_nr", "train_d_rand", "train_d_det"]),
              help="Which of the preset's training stages to start from.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="JSON or TOML file of training settings.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one training setting, e.g. --set epochs=5 (repeatable).")
@click.option("--epochs", type=int, default=None, help="Training epochs.")
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None, help="Learning rate (step schedule: ×0.1 at 1/3 and 2/3 of training).")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default=None)
@click.option("--adversarial", is_flag=True, help="PGD adversarial training (Madry et al.) instead of standard training.")
@click.option("--norm", type=click.Choice(["L2", "Linf", "L1"]), default=None, help="Adversary's norm [L2].")
@click.option("--eps", type=float, default=None, help="Adversary's budget in [0,1] pixel units [0.5].")
@click.option("--attack-steps", type=int, default=None, help="Adversary's PGD steps [7].")
@click.option("--n", "n", type=click.IntRange(min=2), default=None, help="Train on the first N training images only.")
@seed_option
@device_option
def train_command(loader, init_model, source, out, preset, stage, config_file, overrides, epochs, batch_size, lr, optimizer,
                  adversarial, norm, eps, attack_steps, n, seed, device):
    """Train a model (ours or your own architecture) on any supported data, standard or adversarially."""
    from ..errors import ConfigError
    from ..evaluate import accuracy
    from ..experiments.config import choose_preset, resolve_train_config
    from ..models import save_model
    from ..storage import folder_lock, json_digest
    from ..train import train_model

    adversary = {"adversary.norm": norm, "adversary.eps": eps, "adversary.steps": attack_steps}
    if any(v is not None for v in adversary.values()) and not adversarial and stage != "adversarial":
        raise ConfigError("--norm / --eps / --attack-steps configure the adversary: add --adversarial")
    if adversarial and stage != "adversarial" and not any(v is not None for v in adversary.values()):
        adversary["adversary.eps"] = 0.5  # the paper's CIFAR robust model: L2, ε = 0.5, 7 steps of ε/5
    if init_model is None and loader.arch is None:
        raise ConfigError("say what to train: --arch NAME|module:factory for a fresh model, or --model FILE to start from weights")
    dev = start_runtime(device).device
    train, test = source.load(seed=seed)
    train = train.head(n)
    if preset is None:  # the built-in set's own preset, or the one reproduce would choose for these images
        preset = source.dataset if source.data is None else choose_preset(train.image_shape, len(train))[0]
        click.echo(f"training settings from the {preset} preset's {stage} stage (pass --preset to choose another)", err=True)
    # the command's own options are the last layer over the preset, --config and --set: cfg.seed is --seed,
    # which train_model draws batch order, augmentation and the adversary's starts from
    cfg, given = resolve_train_config(preset, stage, config_file=config_file, overrides=list(overrides), epochs=epochs,
                                      batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed, **adversary)
    if init_model is not None:
        model = loader.load(init_model, dev, train)
    else:
        from ..seeding import global_seed

        with global_seed(seed):  # weight initialisation only; the global state is restored
            model = loader.build(train)
    settings = {"train": cfg.as_dict(), "model": loader.describe(), "init": str(init_model) if init_model else None,
                "data": source.describe(), "n": len(train)}
    key = json_digest(settings)
    ckpt = out.with_name(f".{out.name}.{key}.ckpt")  # another option set gets another checkpoint
    summary_path = out.with_suffix(".json")
    # one training per --out at a time: a second one would overwrite the first's checkpoint
    with folder_lock(out.parent, what=f"training of {out.name}", name=f".{out.name}.lock"):
        history = train_model(model, train, cfg, device=dev, checkpoint=ckpt, desc="train")
        save_model(model, out, extra={"training": settings})
        ckpt.unlink(missing_ok=True)
        clean = accuracy(model, test, device=dev)
        write_result(summary_path, {"model_file": str(out), "config": cfg.as_dict(), "given": given, "train_count": len(train),
                                    "test_count": len(test), "test_accuracy": clean, "history": history})
    last = history[-1] if history else {}
    click.echo(f"trained {len(history)} epochs on {len(train)} images of {source.label}: final training loss "
               f"{last.get('loss', float('nan')):.4f}, test accuracy {clean:.4f} on {len(test)} images")
    click.echo(f"wrote {out} and {summary_path}")
