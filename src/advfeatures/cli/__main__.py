"""``python -m advfeatures.cli``: the same tool as the ``advfeatures`` command (what ``torchrun -m`` needs)."""

from . import main

if __name__ == "__main__":
    main()
