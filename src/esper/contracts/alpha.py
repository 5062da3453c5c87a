"""Alpha (blend strength) enums."""

from __future__ import annotations

from enum import IntEnum


class AlphaMode(IntEnum):
    """What the alpha controller is doing right now."""

    HOLD = 0
    UP = 1
    DOWN = 2


class AlphaCurve(IntEnum):
    """Shape of an alpha ramp between two targets."""

    LINEAR = 0
    COSINE = 1
    SIGMOID = 2


class AlphaAlgorithm(IntEnum):
    """How the seed output is combined with the host output at strength alpha."""

    ADD = 0  # lerp(h, s, alpha)
    MULTIPLY = 1  # h * (1 + alpha * tanh(s - x))
    GATE = 2  # lerp(h, s, alpha * g(x)), g a small learned gate


# Steps a ramp may take (0 = jump immediately).
ALPHA_RAMP_STEPS: tuple[int, ...] = (0, 3, 5, 8)
# Targets a controller may ask for.
ALPHA_TARGETS: tuple[float, ...] = (0.5, 0.7, 1.0)
# Sigmoid steepness choices.
SIGMOID_STEEPNESS: tuple[float, ...] = (6.0, 12.0, 24.0)
