import struct

import numpy as np
import pytest
from click.testing import CliRunner

from advfeatures.cli import main


def _run(args, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["reproduce", "--quiet", "--out", str(out), *args])
    return result, out


@pytest.mark.parametrize("args, message", [
    (["--preset", "imagenet"], "unknown preset 'imagenet'"),
    (["--dataset", "svhn"], "unknown dataset 'svhn'"),
    (["--preset", "fashion-mnist", "--data-root", "/nonexistent/folder"], "does not exist"),
    (["--preset", "mnist"], "--data-root"),
    (["--set", "construction.relabel.eps=0"], "construction.relabel: eps must be"),
    (["--set", "adversarial.adversary.eps=-1"], "adversarial.adversary: eps must be"),
    (["--set", "standard.epochs=0"], "standard: epochs must be"),
    (["--set", "evaluation.attacks=[{\"eps\": -0.5}]"], "evaluation.attacks[0]: eps must be"),
    (["--set", "extras.transfer_train_limit=0"], "extras.transfer_train_limit"),
    (["--set", "no_such_thing=1"], "unknown setting 'no_such_thing'"),
    (["--set", "standard.epochs"], "key.path=value"),
])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, args, message):
    result, out = _run(args, tmp_path)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not out.exists()


def test_images_outside_unit_range_are_refused(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for prefix in ("train", "t10k"):
        imgs = np.full((3, 4, 4), 1.5, dtype=">f4")
        header = struct.pack(">BBBB", 0, 0, 0x0D, 3) + struct.pack(">3I", *imgs.shape)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + imgs.tobytes())
        labels = np.zeros(3, dtype=np.uint8)
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 3) + labels.tobytes())
    result, out = _run(["--preset", "mnist", "--data-root", str(folder)], tmp_path)
    assert result.exit_code == 2 and "must lie in [0, 1]" in result.output and not out.exists()


def test_help_lists_the_main_job():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "reproduce" in result.output
