"""Many-member training: the pure per-member step (:mod:`.step`), the jitted epoch and the pure
loop :func:`train_members` (:mod:`.loop`), and the run directory with checkpoints and resume (:mod:`.rundir`);
:func:`fit_members` composes the last two."""
from jaxmem.train.loop import (EpochEnd, Progress, TrainResult, batch_order, default_member_chunk, device_data,
                               epoch_compiler_options, epoch_keys, fit_members, init_members, make_epoch_fn,
                               make_eval_fn, make_member_epoch, paper2_epoch_schedule, split_member_keys,
                               steps_per_epoch, train_members)
from jaxmem.train.rundir import RunDir, load_member_params, read_run_config
from jaxmem.train.step import (DeviceData, EvalMetrics, MemberState, cross_entropy, evaluate, init_member,
                               make_optimizer, train_step)

__all__ = [
    "DeviceData", "EpochEnd", "EvalMetrics", "MemberState", "Progress", "RunDir", "TrainResult", "batch_order",
    "cross_entropy", "default_member_chunk", "device_data", "epoch_compiler_options", "epoch_keys", "evaluate",
    "fit_members", "init_member", "init_members", "load_member_params", "make_epoch_fn", "make_eval_fn",
    "make_member_epoch", "make_optimizer", "paper2_epoch_schedule", "read_run_config", "split_member_keys",
    "steps_per_epoch", "train_members", "train_step",
]
