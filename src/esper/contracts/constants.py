"""Numeric constants shared across packages (one definition each)."""

# Added to denominators of gradient-norm ratios (seed/host) to avoid 0/0.
GRADIENT_EPSILON = 1e-12

# A pruned slot sits EMBARGOED for this many step_epoch ticks ...
EMBARGO_EPOCHS = 5
# ... and is DORMANT (free) again exactly this many ticks after the prune:
# 1 tick PRUNED->EMBARGOED, EMBARGO_EPOCHS ticks of embargo, 1 tick of RESETTING.
SLOT_FREE_AFTER_PRUNE_TICKS = EMBARGO_EPOCHS + 2
