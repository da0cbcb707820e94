"""Training: standard and PGD adversarial training (Madry et al. 2018), on one screen.

SGD with momentum and weight decay under a step learning-rate schedule (the paper's: ×0.1 at 1/3
and 2/3 of training), Adam as an option; batched crop/flip augmentation; a checkpoint after every
epoch, so an interrupted run resumes where it stopped and finishes with the same weights.
Adversarial training replaces each batch by PGD examples made against the current model (in eval
mode, as in the reference implementation), then takes an ordinary training step on them.

Under ``torchrun`` training is data-parallel (DistributedDataParallel, gloo on CPU, NCCL on GPU):
every process draws the same epoch permutation and augmentation, keeps its share of each batch
(positions ≡ rank mod world size), so the union of the shares is the single-process epoch, and the
averaged gradient is the single-process batch mean. Only rank 0 writes checkpoints. ``compile``,
``bf16`` and ``channels_last`` (see :func:`advfeatures.distributed.accelerate`) change speed only.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed
from .attacks.pgd import PGD
from .data.augment import augment_batch
from .data.dataset import ImageDataset
from .defences import DefenceConfig, build_objective, check_objective
from .errors import ConfigError, DataError
from .progress import progress
from .runtime.speed import channels_last_usable
from .storage import fault_point, tensor_digest, write_bytes_atomic
from .threats import check_positive, check_steps
from .validate import in_range, non_negative, whole
from .validate import seed as check_seed

log = logging.getLogger(__name__)


@dataclass
class AdversaryConfig:
    """PGD used to make training examples (the paper's CIFAR robust model: L2, ε=0.5, 7 steps of
    ε/5, no random start)."""

    norm: str = "L2"
    eps: float = 0.5
    steps: int = 7
    step_size: float | None = None  # default eps / 5 (the paper's)
    random_start: bool = False

    def build(self, seed: int) -> PGD:
        check_positive("eps", self.eps)  # before the default step (eps / 5) is derived from it
        step = self.step_size if self.step_size is not None else self.eps / 5
        return PGD(norm=self.norm, eps=self.eps, steps=self.steps, step_size=step, random_start=self.random_start,
                   keep_best=False, seed=seed)


@dataclass
class TrainConfig:
    epochs: int = 150
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"  # "sgd" or "adam"
    milestones: tuple[float, ...] = (1 / 3, 2 / 3)  # fractions of the epochs where lr ×= gamma
    gamma: float = 0.1
    crop_padding: int = 4
    flip: bool = True
    adversary: AdversaryConfig | None = None
    # the training objective (advfeatures.defences): "standard" (PGD training when adversary is set),
    # "pgd", "trades", "fast", "free", "logit_pairing", "ibp", "gaussian"; their settings in defence
    objective: str = "standard"
    defence: DefenceConfig = field(default_factory=DefenceConfig)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        check_steps(self.epochs, "epochs")
        check_steps(self.batch_size, "batch_size")
        check_positive("lr", self.lr)
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        in_range("momentum", self.momentum, 0, 1, high_open=True)
        non_negative("weight_decay", self.weight_decay)  # nan or inf weight decay makes every weight nan
        in_range("gamma", self.gamma, 0, 1, low_open=True)
        whole("crop_padding", self.crop_padding, minimum=0, maximum=1024)
        check_seed(self.seed)
        if any(not 0 < m < 1 for m in self.milestones):
            raise ConfigError(f"milestones are fractions of training in (0, 1), got {list(self.milestones)}")
        check_objective(self.objective, self.adversary is not None)
        self.defence.validate()
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_at(epoch: int, cfg: TrainConfig) -> float:
    """The learning rate of ``epoch`` (counted from 0) under the step schedule.

    A milestone ``m`` (a fraction of training) falls at epoch ``max(1, floor(m · epochs))``: the
    paper's 1/3 and 2/3 of 150 epochs are epochs 50 and 100, and from epoch 3 on nothing changes;
    but a milestone never falls at epoch 0, so the first epoch always runs at the rate asked for
    (``floor`` alone put both milestones at epoch 0 of a one-epoch run, which then trained at 1% of
    its rate, and a two-epoch fine-tuning at 10% then 1%). A milestone at or past the last epoch
    has no effect: a one-epoch run never decays, a two-epoch run decays at epoch 1.
    """
    passed = sum(epoch >= max(1, math.floor(m * cfg.epochs + 1e-9)) for m in cfg.milestones)
    return cfg.lr * cfg.gamma**passed


def _generator_states(*owners: Any) -> list[dict[str, torch.Tensor]]:
    """The states of the per-device generators of each owner (an attack's random starts, a
    defence's noise): a resumed run must continue their streams, not restart them from the seed."""
    return [{str(dev): g.get_state() for dev, g in getattr(o, "_generators", {}).items()} for o in owners]


def _restore_generators(states: list[dict[str, torch.Tensor]], *owners: Any) -> None:
    for owner, saved in zip(owners, states):
        for dev, state in saved.items():
            owner.generator(torch.device(dev)).set_state(state)


def _save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, gen: torch.Generator, history: list,
                     rng_owners: tuple = (), extra: dict[str, Any] | None = None) -> None:
    buf = io.BytesIO()  # serialised first: a full disk is then the plain write's OSError (one line in the CLI)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                "generator": gen.get_state(), "history": history, "generators": _generator_states(*rng_owners),
                "model_digest": tensor_digest(*model.state_dict().values()), "extra": extra or {}}, buf)
    write_bytes_atomic(path, buf.getvalue())


def _load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """A training checkpoint, read with ``weights_only=True``; anything unreadable or foreign is one
    line (never unpickled code, never a traceback)."""
    import pickle
    import zipfile

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, TypeError, AttributeError,
            OSError, KeyError, IndexError) as exc:
        raise DataError(f"training checkpoint {path} is unreadable or not ours ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:200]}); delete it to train from the start") from None
    need = {"model", "optimizer", "epoch", "generator", "history"}
    if not isinstance(state, dict) or not need <= set(state):
        raise DataError(f"training checkpoint {path} is not an advfeatures training checkpoint; delete it to train from the start")
    try:
        ok = "model_digest" not in state or state["model_digest"] == tensor_digest(*state["model"].values())
    except (AttributeError, TypeError, RuntimeError):
        ok = False
    if not ok:  # the weights changed on disk (a flipped bit, a tampered file)
        raise DataError(f"training checkpoint {path} does not match its own digest (damaged on disk?); delete it to train "
                        "from the start")
    return state


# An epoch whose mean loss is this many times the loss training started from has diverged: a
# learning rate of 1e30 keeps the loss finite (around 1e28) and ends with chance accuracy, and no
# setting that trains comes near it (the presets' stages, adversarial ones included, stay within a few
# times their starting loss).
DIVERGED_FACTOR = 50.0
# ...and weights whose norm grew this many times have exploded (a large rate can kill every ReLU, so
# that the loss sits at log(classes) while the weights are 1e30); training grows norms by tens at most.
EXPLODED_FACTOR = 1e4


def _weight_norm(model: nn.Module) -> float:
    norms = [p.detach().float().norm() for p in model.parameters() if p.numel()]
    return float(torch.stack(norms).norm()) if norms else 0.0


def _check_not_diverged(model: nn.Module, record: dict[str, float], reference: float | None, start_norm: float,
                        cfg: TrainConfig, desc: str) -> None:
    """Stop training loudly when it has diverged though every loss stayed finite: the epoch's mean
    loss is ``DIVERGED_FACTOR`` times the starting one (the first batch's, at least log(classes)),
    or the weights' norm is ``EXPLODED_FACTOR`` times the starting one, or not finite."""
    loss, norm = record["loss"], _weight_norm(model)
    if reference is not None and loss > DIVERGED_FACTOR * reference:
        why = f"its mean loss {loss:.3g} is over {DIVERGED_FACTOR:g}x the starting loss {reference:.3g}"
    elif not math.isfinite(norm) or norm > EXPLODED_FACTOR * max(start_norm, 1e-3):
        why = f"the weights' norm went from {start_norm:.3g} to {norm:.3g}"
    else:
        return
    raise ConfigError(f"{desc}: training diverged in epoch {record['epoch']} ({why}) with lr={cfg.lr:g}, "
                      f"weight_decay={cfg.weight_decay:g}; lower the learning rate (or weight decay) and run again")


def train_model(
    model: nn.Module,
    data: ImageDataset,
    cfg: TrainConfig,
    *,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    desc: str = "train",
    compile: bool = False,
    bf16: bool = False,
    channels_last: bool = False,
) -> list[dict[str, float]]:
    """Train ``model`` in place on ``data``; returns per-epoch loss and accuracy on the training batches.

    With ``checkpoint`` (a file path), the state after each epoch is saved there and a later call
    resumes from it (the file is loaded with ``weights_only=True``).

    When ``torch.distributed`` is initialised with more than one process (``torchrun``), each
    process trains on its share of every batch inside ``DistributedDataParallel``; every rank
    returns the same history and ends with the same parameters. BatchNorm batch statistics are per
    process (no SyncBatchNorm); running statistics are rank 0's.
    """
    cfg.validate()
    device = torch.device(device)
    model.to(device)
    world, rank = distributed.world_size(), distributed.rank()
    gen = torch.Generator().manual_seed(cfg.seed)
    channels_last = channels_last_usable(channels_last, device.type)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # before DDP, which must see the final parameter layout
    opt = make_optimizer(model, cfg)
    # rank 0 keeps the single-process seed; other ranks draw their own random starts
    adversary = cfg.adversary.build(cfg.seed + 1 + 1_000_003 * rank) if cfg.adversary else None
    objective = build_objective(cfg.objective, cfg.defence, adversary, seed=cfg.seed + 2 + 1_000_003 * rank)
    if world > 1 and objective.name == "ibp":
        raise ConfigError("ibp training runs in one process; start it without torchrun")
    speed = {"compile": compile, "bf16": bf16, "channels_last": channels_last, "device": device}
    attack_net = distributed.accelerate(model, **speed)
    history: list[dict[str, float]] = []
    start_epoch = 0
    reference: float | None = None  # the loss and the weights' norm a run starts from (see _check_not_diverged)
    start_norm = _weight_norm(model)
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.is_file():
        state = _load_checkpoint(ckpt, device)
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            _restore_generators(state.get("generators", []), adversary, objective)
            history, start_epoch = list(state["history"]), int(state["epoch"])
            reference = (state.get("extra") or {}).get("reference_loss")
            start_norm = (state.get("extra") or {}).get("start_norm", start_norm)
        except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise DataError(f"training checkpoint {ckpt} does not fit this model or run ({' '.join(str(exc).split())[:200]}); "
                            "delete it to train from the start, or use the run's own settings") from None
        log.info("%s: resuming at epoch %d/%d from %s", desc, start_epoch, cfg.epochs, ckpt)
        if history and history[-1].get("stopped"):  # an objective ended training early (fast AT's check)
            start_epoch = cfg.epochs
    train_net = attack_net
    if world > 1:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        train_net = distributed.accelerate(ddp, **speed)
    # an in-memory set moves to the device once, as held (uint8 stays uint8); a streamed one is read
    # from disk a batch at a time. Either way each batch is float32 in [0, 1], the same numbers.
    data = data.to(device)
    n = len(data)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    objective.begin(model, data)
    for epoch in range(start_epoch, cfg.epochs):
        for group in opt.param_groups:
            group["lr"] = lr_at(epoch, cfg)
        model.train()
        perm = torch.randperm(n, generator=gen)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        batches = data.iter_batches(cfg.batch_size, order=perm, device=device)
        for b, (x, y) in enumerate(progress(batches, total=steps_per_epoch, desc=f"{desc} {epoch + 1}/{cfg.epochs}")):
            if cfg.crop_padding or cfg.flip:  # the whole batch on every rank: the generators stay in step
                x = augment_batch(x, crop_padding=cfg.crop_padding, flip=cfg.flip, generator=gen)
            batch = y.shape[0]
            if world > 1:
                x, y = x[rank::world], y[rank::world]
            # the objective's training step (advfeatures.defences): DDP averages over ranks, so each
            # rank's sum is scaled to make the result the batch mean
            done = (epoch * steps_per_epoch + b) / (cfg.epochs * steps_per_epoch)
            ce_sum, logits = objective.step(train_net, attack_net, x, y, opt, scale=world / batch if world > 1 else None,
                                            progress=done)
            if not bool(torch.isfinite(ce_sum.detach()).all()):  # diverged: stop loudly, never train on nan
                raise ConfigError(f"{desc}: training diverged at epoch {epoch + 1}, batch {b + 1} (loss {float(ce_sum):.3g}) "
                                  f"with lr={cfg.lr:g}, weight_decay={cfg.weight_decay:g}; lower the learning rate "
                                  "(or weight decay) and run again")
            if reference is None:  # the run's first batch, before any step: at least log(classes)
                reference = max(math.log(max(2, data.num_classes)), float(ce_sum) / max(1, y.shape[0]))
            loss_sum += ce_sum.detach()
            correct += (logits.detach().argmax(1) == y).sum()
        if world > 1:
            distributed.all_reduce_sum(loss_sum)
            distributed.all_reduce_sum(correct)
            for buf in model.buffers():  # BatchNorm running statistics: rank 0's, on every rank
                torch.distributed.broadcast(buf, 0)
        record = {"epoch": epoch + 1, "lr": lr_at(epoch, cfg), "loss": float(loss_sum) / n, "train_accuracy": float(correct) / n}
        _check_not_diverged(model, record, reference, start_norm, cfg, desc)  # before this epoch's state is checkpointed
        record.update(objective.end_epoch(model, epoch) or {})
        history.append(record)
        log.debug("%s epoch %d: %s", desc, epoch + 1, record)
        if ckpt is not None:
            if rank == 0:
                _save_checkpoint(ckpt, model, opt, epoch + 1, gen, history, (adversary, objective),
                                 extra={"reference_loss": reference, "start_norm": start_norm})
                fault_point("epoch", epoch + 1)  # the interruption tests' kill -9 (storage.fault_point)
            distributed.barrier()
        if record.get("stopped"):
            break
    model.eval()
    return history
