"""Masked categorical distributions and the factored, conditional action masks.

Invalid choices get the most negative finite logit rather than -inf: -inf makes
softmax/entropy produce NaN (0 * -inf) as soon as a row is mostly masked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from esper.contracts.actions import HEAD_CREDIT, HEADS, ActionSpace, Op

# Plain (unconditional) per-head masks, in HEADS order.
PLAIN_MASK_HEADS: tuple[str, ...] = ("style", "tempo", "alpha_target", "alpha_speed", "alpha_curve")
# The op whose alpha_target choices depend on the chosen slot (alpha_target_by_slot).
SLOT_CONDITIONAL_TARGET_OP = Op.SET_ALPHA_TARGET


class MaskedCategorical:
    """Categorical over the last dim of `logits`, restricted to `mask` (bool, same shape)."""

    def __init__(self, logits: Tensor, mask: Tensor) -> None:
        if mask.dtype != torch.bool:
            raise ValueError(f"MaskedCategorical mask: expected dtype torch.bool, got {mask.dtype}")
        if logits.shape != mask.shape:
            raise ValueError(
                f"MaskedCategorical: logits shape {tuple(logits.shape)} != mask shape {tuple(mask.shape)}"
            )
        if logits.dim() < 1 or logits.shape[-1] == 0:
            raise ValueError(f"MaskedCategorical: expected a non-empty last dim, got {tuple(logits.shape)}")
        self.n_valid = mask.sum(dim=-1)
        if bool((self.n_valid == 0).any()):
            rows = torch.nonzero(self.n_valid == 0).tolist()
            raise ValueError(f"MaskedCategorical: rows {rows[:8]} have no valid choice (mask all False)")
        self.mask = mask
        self.logits = torch.where(mask, logits, torch.finfo(logits.dtype).min)
        self.log_probs = torch.log_softmax(self.logits, dim=-1)
        self.probs = self.log_probs.exp()

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        flat = self.probs.reshape(-1, self.probs.shape[-1])
        # Masked probabilities are exactly 0 (exp underflows), so multinomial never picks them.
        picked = torch.multinomial(flat, 1, generator=generator)
        return picked.reshape(self.probs.shape[:-1])

    def mode(self) -> Tensor:
        return self.logits.argmax(dim=-1)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.log_probs.gather(-1, value.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> Tensor:
        terms = torch.where(self.mask, self.probs * self.log_probs, torch.zeros_like(self.probs))
        return -terms.sum(dim=-1)

    def normalized_entropy(self) -> Tensor:
        """Entropy / log(#valid) in [0, 1]; 0 where only one choice is valid."""
        log_valid = torch.log(self.n_valid.to(self.probs.dtype))
        safe = torch.where(self.n_valid > 1, log_valid, torch.ones_like(log_valid))
        return torch.where(self.n_valid > 1, self.entropy() / safe, torch.zeros_like(log_valid))


def credit_matrix(device: torch.device | str | None = None) -> Tensor:
    """(n_ops, n_heads) bool: row `op` marks the heads credited for that op (HEAD_CREDIT)."""
    rows = [[name in HEAD_CREDIT[op] for name in HEADS] for op in Op]
    return torch.tensor(rows, dtype=torch.bool, device=device)


def effective_mask(mask: Tensor, credited: Tensor) -> Tensor:
    """The mask a head samples from.

    A head that is not credited for the chosen op still needs *some* sample; if
    its mask row is empty (e.g. the slot mask under WAIT) any index will do, so
    the row becomes all True. A credited head keeps its mask, and an empty
    credited row is a malformed mask that MaskedCategorical rejects.
    """
    empty = ~mask.any(dim=-1, keepdim=True)
    return mask | (empty & ~credited.unsqueeze(-1))


@dataclass(frozen=True)
class ActionMasks:
    """Factored masks for a batch (any leading shape *B).

    op (*B, 6); slot_by_op (*B, 6, n_slots): the slots valid for each op;
    blueprint_by_slot (*B, n_slots, n_blueprints): blueprints valid in each slot
    (used for GERMINATE); one plain mask (*B, n) for each of style, tempo,
    alpha_target, alpha_speed, alpha_curve; alpha_target_by_slot
    (*B, n_slots, n_targets): the targets valid in each slot, used instead of
    the plain alpha_target mask when the op is SET_ALPHA_TARGET (a retarget's
    legal targets depend on the slot's stage and current alpha). All bool.

    alpha_target_by_slot may be omitted: it then defaults to the plain
    alpha_target mask for every slot (a broadcast view of it).
    """

    op: Tensor
    slot_by_op: Tensor
    blueprint_by_slot: Tensor
    style: Tensor
    tempo: Tensor
    alpha_target: Tensor
    alpha_speed: Tensor
    alpha_curve: Tensor
    alpha_target_by_slot: Tensor = None  # type: ignore[assignment]  # filled in by __post_init__

    def __post_init__(self) -> None:
        if self.alpha_target_by_slot is None:
            if not isinstance(self.alpha_target, Tensor) or not isinstance(self.slot_by_op, Tensor):
                raise ValueError("ActionMasks: alpha_target and slot_by_op must be tensors")
            if self.alpha_target.dim() < 1 or self.slot_by_op.dim() < 1:
                raise ValueError(
                    f"ActionMasks: alpha_target {tuple(self.alpha_target.shape)} and slot_by_op "
                    f"{tuple(self.slot_by_op.shape)} need a last (choice) dim"
                )
            n_slots = self.slot_by_op.shape[-1]
            view = self.alpha_target.unsqueeze(-2)
            expanded = view.expand(*view.shape[:-2], n_slots, view.shape[-1])
            object.__setattr__(self, "alpha_target_by_slot", expanded)

    @classmethod
    def all_valid(
        cls, batch: int, space: ActionSpace, device: torch.device | str | None = None
    ) -> ActionMasks:
        """Every choice allowed (useful for tests and unconstrained environments)."""
        sizes = space.head_sizes()

        def ones(*shape: int) -> Tensor:
            return torch.ones(batch, *shape, dtype=torch.bool, device=device)

        return cls(
            op=ones(sizes["op"]),
            slot_by_op=ones(sizes["op"], sizes["slot"]),
            blueprint_by_slot=ones(sizes["slot"], sizes["blueprint"]),
            **{name: ones(sizes[name]) for name in PLAIN_MASK_HEADS},
            alpha_target_by_slot=ones(sizes["slot"], sizes["alpha_target"]),
        )

    @property
    def batch_shape(self) -> torch.Size:
        return self.op.shape[:-1]

    def tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def apply(self, fn: Callable[[Tensor], Tensor]) -> ActionMasks:
        """Apply `fn` to every tensor (indexing, reshaping, moving)."""
        return ActionMasks(**{name: fn(t) for name, t in self.tensors().items()})

    def to(self, device: torch.device | str) -> ActionMasks:
        return self.apply(lambda t: t.to(device))

    def index(self, idx: Tensor | slice | int) -> ActionMasks:
        """Index the leading (batch) dims of every tensor, e.g. masks.index(env_ids)."""
        return self.apply(lambda t: t[idx])

    def flatten_batch(self) -> ActionMasks:
        """Merge all leading dims into one: (*B, ...) -> (prod(B), ...)."""
        lead = len(self.batch_shape)
        return self.apply(lambda t: t.reshape(-1, *t.shape[lead:]))

    @staticmethod
    def stack(items: Sequence[ActionMasks], dim: int = 0) -> ActionMasks:
        if not items:
            raise ValueError("ActionMasks.stack: expected at least one ActionMasks, got none")
        names = [f.name for f in fields(ActionMasks)]
        return ActionMasks(**{n: torch.stack([getattr(m, n) for m in items], dim=dim) for n in names})

    @staticmethod
    def cat(items: Sequence[ActionMasks], dim: int = 0) -> ActionMasks:
        if not items:
            raise ValueError("ActionMasks.cat: expected at least one ActionMasks, got none")
        names = [f.name for f in fields(ActionMasks)]
        return ActionMasks(**{n: torch.cat([getattr(m, n) for m in items], dim=dim) for n in names})

    def validate(self, space: ActionSpace) -> None:
        """Check dtypes and shapes against `space`, and that the masks are exact.

        Exact means: an op is valid only if some slot is valid for it (ops that
        credit the slot head), and a slot valid for GERMINATE has some valid
        blueprint. Otherwise the policy could pick an op it cannot carry out.
        """
        sizes = space.head_sizes()
        lead = tuple(self.batch_shape)
        expected = {
            "op": (sizes["op"],),
            "slot_by_op": (sizes["op"], sizes["slot"]),
            "blueprint_by_slot": (sizes["slot"], sizes["blueprint"]),
            **{name: (sizes[name],) for name in PLAIN_MASK_HEADS},
            "alpha_target_by_slot": (sizes["slot"], sizes["alpha_target"]),
        }
        for name, tensor in self.tensors().items():
            if tensor.dtype != torch.bool:
                raise ValueError(f"ActionMasks.{name}: expected dtype torch.bool, got {tensor.dtype}")
            if tuple(tensor.shape) != lead + expected[name]:
                raise ValueError(
                    f"ActionMasks.{name}: expected shape {lead + expected[name]}, got {tuple(tensor.shape)}"
                )
        if bool((~self.op.any(dim=-1)).any()):
            raise ValueError("ActionMasks.op: some rows allow no op at all")
        for op in Op:
            if "slot" not in HEAD_CREDIT[op]:
                continue
            orphan = self.op[..., op] & ~self.slot_by_op[..., op, :].any(dim=-1)
            if bool(orphan.any()):
                raise ValueError(f"ActionMasks: op {op.name} is valid in some rows with no valid slot for it")
        germ_slots = self.slot_by_op[..., Op.GERMINATE, :] & self.op[..., Op.GERMINATE, None]
        no_blueprint = germ_slots & ~self.blueprint_by_slot.any(dim=-1)
        if bool(no_blueprint.any()):
            raise ValueError("ActionMasks: a slot is valid for GERMINATE but allows no blueprint")
        target_op = SLOT_CONDITIONAL_TARGET_OP
        retarget_slots = self.slot_by_op[..., target_op, :] & self.op[..., target_op, None]
        if bool((retarget_slots & ~self.alpha_target_by_slot.any(dim=-1)).any()):
            raise ValueError(f"ActionMasks: a slot is valid for {target_op.name} but allows no alpha target")
        for name in PLAIN_MASK_HEADS:
            crediting = [
                int(op)
                for op in Op
                if name in HEAD_CREDIT[op] and not (name == "alpha_target" and op == target_op)
            ]
            needed = self.op[..., crediting].any(dim=-1)
            if bool((needed & ~getattr(self, name).any(dim=-1)).any()):
                raise ValueError(
                    f"ActionMasks.{name}: no valid choice in a row where an op needing it is valid"
                )


def head_mask(masks: ActionMasks, name: str, rows: Tensor, chosen: Mapping[str, Tensor]) -> Tensor:
    """The raw (B, n) mask of head `name`, given the heads already chosen per row.

    `masks` has one leading batch dim; `chosen` maps earlier heads (HEADS
    order) to their (B,) choices. Acting and re-scoring both call this, so
    they always see the same masks.
    """
    needs = {"slot": ("op",), "blueprint": ("slot",), "alpha_target": ("op", "slot")}
    missing = [head for head in needs.get(name, ()) if head not in chosen]
    if missing:
        raise ValueError(f"head_mask: head {name!r} needs the choices of {missing} first")
    if name == "slot":
        return masks.slot_by_op[rows, chosen["op"]]
    if name == "blueprint":
        return masks.blueprint_by_slot[rows, chosen["slot"]]
    if name == "alpha_target":
        by_slot = masks.alpha_target_by_slot[rows, chosen["slot"]]
        conditional = (chosen["op"] == SLOT_CONDITIONAL_TARGET_OP).unsqueeze(-1)
        return torch.where(conditional, by_slot, masks.alpha_target)
    if name != "op" and name not in PLAIN_MASK_HEADS:
        raise ValueError(f"head_mask: unknown head {name!r}; heads are {HEADS}")
    return getattr(masks, name)
