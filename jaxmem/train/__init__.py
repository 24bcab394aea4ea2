"""Many-member training (SPEC §1.3, §3): the pure per-member step (:mod:`.step`) and the jitted epoch and host
loop with checkpoints and resume (:mod:`.loop`)."""
from jaxmem.train.loop import (TrainResult, batch_order, default_member_chunk, device_data, epoch_compiler_options,
                               epoch_keys, fit_members, init_members, load_member_params, make_epoch_fn,
                               make_eval_fn, make_member_epoch, paper2_epoch_schedule, read_run_config, split_member_keys, steps_per_epoch)
from jaxmem.train.step import (DeviceData, EvalMetrics, MemberState, cross_entropy, evaluate, init_member,
                               make_optimizer, train_step)

__all__ = [
    "DeviceData", "EvalMetrics", "MemberState", "TrainResult", "batch_order", "cross_entropy", "default_member_chunk",
    "device_data", "epoch_compiler_options", "epoch_keys", "evaluate", "fit_members", "init_member", "init_members", "load_member_params",
    "make_epoch_fn", "make_eval_fn", "make_member_epoch", "make_optimizer", "paper2_epoch_schedule",
    "read_run_config", "split_member_keys", "steps_per_epoch", "train_step",
]
