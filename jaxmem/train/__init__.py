"""Many-member training, in layers that each use only the ones before: the pure per-member step (:mod:`.step`),
the jitted epoch of all members (:mod:`.epoch`), the host loop over epochs with no file I/O (:mod:`.loop`:
:func:`train_members`), and fitting a run in its run directory (:mod:`.fit`: :func:`fit_members`) on top of
:mod:`.rundir` (the files, checkpoints, resume, and snapshots that carry a run to another machine)."""
from jaxmem.train.epoch import (batch_order, default_member_chunk, device_data, epoch_compiler_options, epoch_keys,
                                init_members, make_epoch_fn, make_eval_fn, make_member_epoch, split_member_keys,
                                steps_per_epoch)
from jaxmem.train.fit import Carry, TrainResult, fit_members, paper2_epoch_schedule
from jaxmem.train.loop import EpochEnd, Progress, concat_members, fresh_states, train_members
from jaxmem.train.rundir import (RunDir, load_member_params, read_run_config, restore_snapshot,
                                 snapshot_run)
from jaxmem.train.step import (DeviceData, EvalMetrics, MemberState, cross_entropy, evaluate, init_member,
                               make_optimizer, train_step)

__all__ = [
    "Carry", "DeviceData", "EpochEnd", "EvalMetrics", "MemberState", "Progress", "RunDir", "TrainResult",
    "batch_order", "concat_members", "cross_entropy", "default_member_chunk", "device_data",
    "epoch_compiler_options", "epoch_keys", "evaluate", "fit_members", "fresh_states", "init_member",
    "init_members", "load_member_params", "make_epoch_fn", "make_eval_fn", "make_member_epoch", "make_optimizer",
    "paper2_epoch_schedule", "read_run_config", "restore_snapshot", "snapshot_run", "split_member_keys",
    "steps_per_epoch", "train_members", "train_step",
]
