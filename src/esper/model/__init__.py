"""The morphogenetic model: a host chained with seed slots."""

from esper.model.morphogenetic import MorphogeneticModel, ParamCounts, SlotReport

__all__ = ["MorphogeneticModel", "ParamCounts", "SlotReport"]
