"""Fuzz examples clean up after themselves: each hypothesis example gets a new empty folder, and
the folder is gone when the example ends (one run of the suite used to leave ~190 ``fuzz-*`` and
``issue15-*`` folders in the system temp dir)."""

from __future__ import annotations

import contextlib

from . import test_fuzz_files as fuzz_files
from .conftest import FUZZ, example_dir


def test_each_fuzz_example_gets_a_fresh_folder_and_leaves_none(files, tmp_path):
    seen, written = [], []

    @contextlib.contextmanager
    def recording():
        with example_dir(tmp_path) as folder:
            assert not any(folder.iterdir()), "an example's folder was not empty"
            seen.append(folder)
            yield folder
            written.append(sorted(p.name for p in folder.iterdir()))

    # a real fuzz test, run through hypothesis with its own settings, given the recording helper
    fuzz_files.test_damaged_model_file(files=files, fresh_dir=recording)
    assert 2 <= len(seen) <= FUZZ.max_examples and len(set(seen)) == len(seen), seen
    assert all("model.safetensors" in names for names in written), written  # the examples worked in their folders
    assert [p for p in seen if p.exists()] == [], "an example's folder was left behind"
    assert list(tmp_path.iterdir()) == []
