"""The distributed tests' shared module (``dist_common``) and workers import each other by
name, as ``torchrun`` runs a worker (its folder first on ``sys.path``); pytest, which also reads
the workers' docstrings, finds them the same way."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
