"""Run `esper train` as one torchrun rank; rank 1 raises in its third epoch (a real failure of one rank).

    torchrun --nproc-per-node 2 raising_rank.py train --config ... --out ...
"""

from __future__ import annotations

import os
import sys

from esper.cli.main import main
from esper.training.growth_run import GrowthRun

_original = GrowthRun.train_epoch


def _train_epoch(self: GrowthRun):  # type: ignore[no-untyped-def]
    if os.environ["RANK"] == "1" and self.epoch == 2:
        raise RuntimeError("injected failure on rank 1")
    return _original(self)


GrowthRun.train_epoch = _train_epoch  # type: ignore[method-assign]
sys.exit(main(sys.argv[1:]))
