"""A run's own random generators (Python, NumPy, torch), created from its seed.

A run never reseeds the process: two runs in one process (vectorised RL
environments, `esper evaluate` workers) and the code around them each keep
their own streams. The generators are saved in the run's checkpoint and
restored on resume, so a resumed run draws exactly what the uninterrupted one
would have.

Seeding is the same as the process-wide seeding it replaces: `random.Random(s)`,
`RandomState(s)` and `torch.Generator().manual_seed(s)` produce the streams of
`random.seed(s)`, `np.random.seed(s)` and `torch.manual_seed(s)`, so runs are
bit-identical to before.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from esper.checkpoints.run_state import RngState

__all__ = ["RunGenerators"]


class RunGenerators:
    """`python`, `numpy` and `torch` generators of one run.

    Nothing in a run draws from Python's or NumPy's generators today (batch
    order and the random controller have seeded generators of their own); they
    are here, seeded and checkpointed, for code that needs them.
    """

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"run seed: expected an int >= 0, got {seed!r}")
        self.python = random.Random(seed)
        # NumPy's legacy seeding takes 32 bits (the run config keeps seeds below 2**32).
        self.numpy = np.random.RandomState(seed % 2**32)
        self.torch = torch.Generator().manual_seed(seed)
        self._lent = False

    @contextmanager
    def torch_default(self) -> Iterator[None]:
        """Inside the block, torch's default CPU generator draws this run's stream.

        nn.Module constructors (a host's or a blueprint's initial weights) and
        dropout take no generator argument: they draw from torch's default
        generator. Rather than re-implementing every module's initialisation,
        the run lends its generator's state to the default one for the span of
        its own model code and takes the advanced state back afterwards;
        `fork_rng` gives the caller's default generator back untouched. The
        draws are those a process seeded with the run's seed would make, in
        the same order.
        """
        if self._lent:  # already inside a block: the default generator is drawing this stream
            yield
            return
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.torch.get_state())
            self._lent = True
            try:
                yield
            finally:
                self._lent = False
                self.torch.set_state(torch.get_rng_state())

    def state_dict(self) -> dict[str, Any]:
        """The three states as checkpoint primitives (the layout `esper.checkpoints.run_state` validates)."""
        py_version, py_state, py_gauss = self.python.getstate()
        numpy_state = self.numpy.get_state(legacy=True)
        assert isinstance(numpy_state, tuple)  # legacy=True: (name, keys, pos, has_gauss, gauss)
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = numpy_state
        return {
            "python": [py_version, list(py_state), py_gauss],
            "numpy": [
                np_name,
                torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                int(np_pos),
                int(np_has_gauss),
                float(np_gauss),
            ],
            "torch": self.torch.get_state(),
        }

    def load_state(self, rng: RngState) -> None:
        """Restore states already validated by `esper.checkpoints.run_state.check_run_state`."""
        py_version, py_state, py_gauss = rng.python
        self.python.setstate((py_version, tuple(py_state), py_gauss))
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = rng.numpy
        self.numpy.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
        self.torch.set_state(rng.torch)
