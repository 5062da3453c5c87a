"""How a seed's output joins the host's output: blend operators and helpers.

Every operator is exactly the identity (bit for bit) when alpha is 0, so a
slot whose alpha is 0 (or a counterfactual that forces it to 0) computes
the host alone.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from esper.contracts.alpha import AlphaAlgorithm

# Fixed seed of the gate's private generator: a gate's initial weights depend
# only on its width, never on (and never advance) the global RNG.
_GATE_INIT_SEED = 0x5EED_6A7E


def _gate_hidden(width: int) -> int:
    return max(4, width // 4)


def blend_param_count(algorithm: AlphaAlgorithm, width: int) -> int:
    """Trainable parameters the blend operator adds to a seed at slot width `width` (exact).

    Only GATE has any: its BlendGate (Linear width->hidden, ReLU, Linear hidden->1).
    A parameter budget must count them, or a gated seed overruns it.
    """
    if algorithm is not AlphaAlgorithm.GATE:
        return 0
    hidden = _gate_hidden(width)
    return width * hidden + hidden + hidden + 1


class BlendGate(nn.Module):
    """Per-sample learned gate g(x) in (0, 1) computed from pooled seed input.

    x is (B, C, *spatial) with channel_dim=1 (CNN) or (B, T, D) with
    channel_dim=-1 (transformer). Everything except the batch and channel
    dims is averaged away, then Linear -> ReLU -> Linear -> sigmoid; the
    result has shape (B, 1, ..., 1) with x's number of dims.
    """

    def __init__(self, width: int, channel_dim: int) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"BlendGate width must be a positive int, got {width!r}")
        if channel_dim not in (1, -1):
            raise ValueError(
                f"BlendGate channel_dim must be 1 (CNN) or -1 (transformer), got {channel_dim!r}"
            )
        self.width = width
        self.channel_dim = channel_dim
        hidden = _gate_hidden(width)
        # Built on meta, then given empty storage: the layers' default init never runs, so building a
        # gate never draws from the global RNG. The storage is on the CPU (the slot moves the gate
        # with the model), or on meta while a checkpoint skeleton is built (esper.checkpoints.skeleton).
        self.hidden = nn.Linear(width, hidden, device="meta")
        self.out = nn.Linear(hidden, 1, device="meta")
        if torch.get_default_device().type != "meta":
            self.to_empty(device="cpu")
            self._init_weights()

    def _init_weights(self) -> None:
        generator = torch.Generator().manual_seed(_GATE_INIT_SEED)
        with torch.no_grad():
            for layer in (self.hidden, self.out):
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                # Zero bias: the gate starts near 0.5 for near-zero pooled features.
                layer.bias.zero_()

    def extra_repr(self) -> str:
        return f"width={self.width}, channel_dim={self.channel_dim}"

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 3:
            raise ValueError(
                f"BlendGate expects (B, C, *spatial) or (B, T, D) input, got shape {tuple(x.shape)}"
            )
        if x.shape[self.channel_dim] != self.width:
            raise ValueError(
                f"BlendGate(width={self.width}) got {x.shape[self.channel_dim]} features "
                f"on dim {self.channel_dim} of input shape {tuple(x.shape)}"
            )
        channel = self.channel_dim % x.dim()
        pooled_dims = [d for d in range(1, x.dim()) if d != channel]
        pooled = x.mean(dim=pooled_dims)  # (B, width): batch and channel dims remain
        gate = torch.sigmoid(self.out(torch.relu(self.hidden(pooled))))
        return gate.view(x.shape[0], *([1] * (x.dim() - 1)))


def _broadcast_alpha(alpha: Tensor, host: Tensor) -> Tensor:
    """0-dim alpha as is; per-sample (B,) alpha reshaped to (B, 1, ..., 1)."""
    if alpha.dtype != host.dtype:
        raise ValueError(f"alpha dtype {alpha.dtype} must match host dtype {host.dtype}")
    if alpha.dim() == 0:
        return alpha
    if alpha.dim() == 1 and alpha.shape[0] == host.shape[0]:
        return alpha.view(host.shape[0], *([1] * (host.dim() - 1)))
    raise ValueError(
        f"alpha must be 0-dim or per-sample of shape ({host.shape[0]},), got shape {tuple(alpha.shape)}"
    )


def _check_same_shape(name: str, tensor: Tensor, host: Tensor) -> None:
    if tensor.shape != host.shape:
        raise ValueError(f"{name} shape {tuple(tensor.shape)} must equal host shape {tuple(host.shape)}")


def blend(
    algorithm: AlphaAlgorithm,
    host: Tensor,
    seed_out: Tensor,
    seed_in: Tensor,
    alpha: Tensor,
    gate: BlendGate | None,
) -> Tensor:
    """Combine host and seed outputs at strength alpha; exactly `host` where alpha is 0.

    ADD: lerp(h, s, a); MULTIPLY: h * (1 + a * tanh(s - x)); GATE: lerp(h, s, a * g(x)),
    where x = seed_in (the seed's input) and g the slot's BlendGate.
    """
    if not isinstance(algorithm, AlphaAlgorithm):
        raise TypeError(f"algorithm must be an AlphaAlgorithm, got {algorithm!r}")
    _check_same_shape("seed_out", seed_out, host)
    _check_same_shape("seed_in", seed_in, host)
    weight = _broadcast_alpha(alpha, host)
    if algorithm is AlphaAlgorithm.GATE:
        if gate is None:
            raise ValueError("AlphaAlgorithm.GATE needs a BlendGate, got gate=None")
        # lerp with weight 0 returns `host` exactly (host + 0 * (s - h)).
        return torch.lerp(host, seed_out, weight * gate(seed_in))
    if gate is not None:
        raise ValueError(f"a BlendGate is only used with AlphaAlgorithm.GATE, not {algorithm.name}")
    if algorithm is AlphaAlgorithm.ADD:
        return torch.lerp(host, seed_out, weight)
    # MULTIPLY: tanh is bounded, so at alpha 0 the factor is exactly 1.
    return host * (1 + weight * torch.tanh(seed_out - seed_in))


def straight_through(host: Tensor, seed_out: Tensor) -> Tensor:
    """Host's value, seed's gradient: host + (s - s.detach()).

    Used in the TRAINING stage: the seed learns from the task loss (its output
    gets the same gradient the slot output gets) while the value the rest of
    the network sees is exactly the host's, so training a seed cannot change
    the host's predictions. seed_out must be finite (inf - inf is NaN).
    """
    _check_same_shape("seed_out", seed_out, host)
    return host + (seed_out - seed_out.detach())


class AlphaTensorCache:
    """A slot's alpha as a 0-dim tensor, keyed by its value, device and dtype.

    Rebuilds the tensor only when one of those changes, so the forward pass does
    not allocate a new tensor every call; being keyed by the value, it never needs
    invalidating when alpha changes.
    """

    def __init__(self) -> None:
        self._entry: tuple[tuple[float, torch.device, torch.dtype], Tensor] | None = None

    def get(self, alpha: float, device: torch.device | str, dtype: torch.dtype) -> Tensor:
        if isinstance(alpha, bool) or not isinstance(alpha, int | float):
            raise ValueError(f"alpha must be a number, got {type(alpha).__name__}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        if not dtype.is_floating_point:
            raise ValueError(f"alpha dtype must be a floating point dtype, got {dtype}")
        key = (float(alpha), torch.device(device), dtype)
        if self._entry is None or self._entry[0] != key:
            self._entry = (key, torch.tensor(key[0], device=key[1], dtype=dtype))
        return self._entry[1]
