"""Errors of the seed mechanics."""

from __future__ import annotations


class LifecycleError(ValueError):
    """An action the slot's current state does not allow; nothing was changed."""
