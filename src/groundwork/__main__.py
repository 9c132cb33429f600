"""``python -m groundwork``: the command line, as ``torchrun ... -m groundwork pretrain ...``
launches it."""

import sys

from groundwork.cli import main

if __name__ == "__main__":
    sys.exit(main())
