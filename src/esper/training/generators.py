"""A run's own random generators (Python, NumPy, torch on CPU and CUDA), created from its seed.

A run never reseeds the process and never lends its state to torch's global
generator: two runs in one process (vectorised RL environments, `esper
evaluate` workers) and the code around them each keep their own streams.

Code that can take a generator is given one. Torch code that cannot (a
module's constructor initialising its weights, dropout in a forward pass)
runs inside the run's `stream()`, an `esper.random_stream.RunStream` that
hands each such op the run's generator for the op's device; the run checks
after each of its steps that torch's global generator did not move. The
generators are saved in the run's checkpoint and restored on resume, so a
resumed run draws exactly what the uninterrupted one would have.

Seeding is the same as the process-wide seeding it replaces: `random.Random(s)`,
`RandomState(s)` and `torch.Generator().manual_seed(s)` produce the streams of
`random.seed(s)`, `np.random.seed(s)` and `torch.manual_seed(s)`, and the
stream routes every draw to the CPU generator in the order torch would have
made it, so runs on CPU are bit-identical to runs that owned the process's
generators. The CUDA generator is created (seeded with the run's seed, as
`torch.manual_seed` seeds CUDA) the first time the run draws on a CUDA device.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from esper.checkpoints.run_state import RngState
from esper.random_stream import RunStream

__all__ = ["RunGenerators"]


class RunGenerators:
    """`python`, `numpy` and `torch` (CPU) generators of one run, and its CUDA generator once it draws there.

    Nothing in a run draws from Python's or NumPy's generators today (batch
    order and the random controller have seeded generators of their own); they
    are here, seeded and checkpointed, for code that needs them.
    """

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"run seed: expected an int >= 0, got {seed!r}")
        self.seed = seed
        self.python = random.Random(seed)
        # NumPy's legacy seeding takes 32 bits (the run config keeps seeds below 2**32).
        self.numpy = np.random.RandomState(seed % 2**32)
        self.torch = torch.Generator().manual_seed(seed)
        self._cuda: torch.Generator | None = None
        # A CUDA state restored from a checkpoint before this process drew on CUDA (or on a
        # machine without CUDA): it becomes the CUDA generator's state when that is created.
        self._cuda_state: torch.Tensor | None = None

    def generator_for(self, device: torch.device) -> torch.Generator:
        """The run's generator for `device`: the CPU one, or the CUDA one (one CUDA device per run)."""
        if device.type == "cpu":
            return self.torch
        if device.type != "cuda":
            raise ValueError(
                f"a run draws random numbers on cpu or cuda only, not on {device} (it owns no generator there)"
            )
        index = device.index if device.index is not None else torch.cuda.current_device()
        if self._cuda is None:
            generator = torch.Generator(device=torch.device("cuda", index)).manual_seed(self.seed)
            if self._cuda_state is not None:
                generator.set_state(self._cuda_state)
                self._cuda_state = None
            self._cuda = generator
        elif self._cuda.device.index != index:
            raise ValueError(
                f"a run draws on one CUDA device: it has drawn on {self._cuda.device}, now asked for cuda:{index}"
            )
        return self._cuda

    def stream(self) -> RunStream:
        """A context in which torch's random ops without a generator draw from this run's generators."""
        return RunStream(self.generator_for)

    def state_dict(self) -> dict[str, Any]:
        """The states as checkpoint primitives (the layout `esper.checkpoints.run_state` validates).

        `cuda` is None until the run has drawn on CUDA (or restored a CUDA state).
        """
        py_version, py_state, py_gauss = self.python.getstate()
        numpy_state = self.numpy.get_state(legacy=True)
        assert isinstance(numpy_state, tuple)  # legacy=True: (name, keys, pos, has_gauss, gauss)
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = numpy_state
        cuda = self._cuda.get_state() if self._cuda is not None else self._cuda_state
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
            "cuda": None if cuda is None else cuda.clone(),
        }

    def load_state(self, rng: RngState) -> None:
        """Restore states already validated by `esper.checkpoints.run_state.check_run_state`."""
        py_version, py_state, py_gauss = rng.python
        self.python.setstate((py_version, tuple(py_state), py_gauss))
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = rng.numpy
        self.numpy.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
        self.torch.set_state(rng.torch)
        if rng.cuda is None:
            self._cuda, self._cuda_state = None, None
        elif self._cuda is not None:
            self._cuda.set_state(rng.cuda)
        else:
            self._cuda_state = rng.cuda.clone()
