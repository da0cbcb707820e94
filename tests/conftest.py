"""Suite-wide settings.

The suite's models are tiny (8×8 digits, a few hundred units): on our 2-core machines one intra-op
thread runs them faster than two, and much faster whenever anything else shares the machine.
"""

import torch

torch.set_num_threads(1)
