"""Suite-wide settings.

The suite's models are tiny (8×8 digits, a few hundred units): on our 2-core machines one intra-op
thread runs them faster than two, and much faster whenever anything else shares the machine.
"""

import torch

torch.set_num_threads(1)

# Property tests draw the same examples on every run, so CI's verdict does not depend on luck; the
# examples are still many and varied (hypothesis derives them from each test's name).
from hypothesis import settings  # noqa: E402

settings.register_profile("advfeatures", derandomize=True, print_blob=True)
settings.load_profile("advfeatures")
