"""Moved to :mod:`labelreg.runtime` (and ``ShardSampler`` to :mod:`labelreg.data.loader`); re-exported here
until every importer imports them from there."""
from labelreg.data.loader import ShardSampler
from labelreg.runtime import (DistInfo, DistributedModel, all_ranks_true, all_reduce_mean, all_reduce_sum, barrier,
                              broadcast_flag, cleanup, collective_device, current, launched_by_torchrun, setup,
                              wrap_model)

__all__ = ["DistInfo", "DistributedModel", "ShardSampler", "all_ranks_true", "all_reduce_mean", "all_reduce_sum",
           "barrier", "broadcast_flag", "cleanup", "collective_device", "current", "launched_by_torchrun", "setup",
           "wrap_model"]
