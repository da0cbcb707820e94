"""Run by the DDP test under ``torchrun --nproc-per-node 2``: adversarial training of the tiny MLP,
each rank writing its final parameters and history to OUT (argument 1)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

from advfeatures.distributed import init_distributed, shutdown
from advfeatures.storage import save_safetensors_atomic, write_json_atomic
from advfeatures.train import train_model


def main(out: Path) -> None:
    ctx, device = init_distributed("cpu")
    try:
        model = _common.tiny_mlp(seed=ctx.rank)  # different on each rank: DDP starts every rank from rank 0's weights
        history = train_model(model, _common.tiny_digits(), _common.adversarial_config(), device=device,
                              checkpoint=out / "checkpoint.pt")
        save_safetensors_atomic({k: v.detach() for k, v in model.state_dict().items()}, out / f"rank{ctx.rank}.safetensors")
        write_json_atomic(out / f"history{ctx.rank}.json", {"history": history, "world_size": ctx.world_size})
    finally:
        shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    print(json.dumps({"ok": True}))
