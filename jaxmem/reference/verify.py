"""Independent framework cross-checks (docs/verification.md): jaxmem against a Keras MLP and a PyTorch CNN.

The same network, the same weights and the same batches must give the same results in the framework the original
study used: the MLP against TensorFlow/Keras, the CNN against PyTorch, each on MNIST-shaped (28×28×1) and
CIFAR-shaped (32×32×3) inputs. Four checks per (model, input shape):

(a) ``forward``: logits and every probe-layer activation at jaxmem's initial weights, loaded into the reference;
(b) ``one_step``: the weights after one optimiser step on the first batch (the paper preset: SGD+momentum 0.9 at
    1e-3 for the MLP, Adam at 2e-4 for the CNN; batch from the preset);
(c) ``trajectory``: S steps in fixed batch order from the same start — weights, per-step losses, end accuracy;
(d) ``masc``: MASC (:func:`jaxmem.masc.fit`, exact mode) fitted on each framework's activations of the trained
    weights predicts the same classes on held-out samples, layer by layer.

jaxmem's side is its real training code: :func:`jaxmem.train.step.make_optimizer`, :func:`init_member` and
:func:`train_step` under ``jax.jit``. Matmuls and convolutions run at ``"highest"`` precision, so a GPU compares
float32 rather than TF32 arithmetic. Importing this module imports neither TensorFlow nor PyTorch; running a check
imports them and raises :class:`ReferenceUnavailable` (an ``ImportError`` that says to install
``jaxmem[reference]``) when they are missing. :func:`run_all` turns that into skipped results.

The tolerances (:data:`TOLERANCES`) and the reasons for them are in ``docs/verification.md``. In short: float32
forward passes and single steps agree to ~1e-6 relative; an SGD trajectory stays within ~1e-4; an Adam trajectory
in float32 is chaotic (Adam turns float32 rounding of near-zero gradients into steps of size ~lr), so the CNN
trajectory is compared in float64, where it agrees to ~1e-12.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict

from jaxmem import masc
from jaxmem.config import TrainSpec, paper_train_spec
from jaxmem.data import dataset_info, load_dataset, normalize
from jaxmem.models import get_model, probe_layers
from jaxmem.reference import convert
from jaxmem.train.step import MemberState, init_member, make_optimizer, train_step

CHECKS = ("forward", "one_step", "trajectory", "masc")
FRAMEWORKS = {"mlp": "tensorflow", "cnn": "torch"}  # model -> the framework the original study trained it in
DATASETS = ("mnist", "cifar10")  # input shapes 28×28×1 and 32×32×3; their paper presets give the optimiser
TRAINING_DTYPES = {"mlp": "float32", "cnn": "float64"}  # of checks (b) and (c); float64 for Adam (module docstring)
INSTALL_HINT = "install jaxmem[reference] (pip install 'jaxmem[reference]')"


class Tolerances(NamedTuple):
    """Pass thresholds; why each has its value is in docs/verification.md."""

    forward: float = 1e-4  # max |ours − theirs| / max |theirs|, per array (logits and each probe layer)
    one_step_float32: float = 1e-3  # ‖w_ours − w_theirs‖ / ‖w_theirs − w_0‖ per weight tensor, and the loss
    one_step_float64: float = 1e-8
    trajectory_float32: float = 1e-2  # ‖θ_ours − θ_theirs‖ / ‖θ_theirs − θ_0‖ after S steps, and the losses
    trajectory_float64: float = 1e-8
    accuracy_points: float = 0.5  # |end accuracy ours − theirs| in percentage points
    masc_disagreement: float = 1e-3  # share of held-out samples whose MASC prediction differs, per layer


TOLERANCES = Tolerances()


class ReferenceUnavailable(ImportError):
    """The reference framework (TensorFlow or PyTorch) cannot be imported."""


@dataclass(frozen=True)
class CheckResult:
    """One check of one (model, input shape). ``error`` is compared with ``tolerance``; ``skipped`` says why not run."""

    check: str  # one of CHECKS
    model: str  # "mlp" or "cnn"
    framework: str  # reference framework and version, e.g. "torch 2.13.0+cpu"
    dataset: str  # input shape family: "mnist" (28×28×1) or "cifar10" (32×32×3)
    data: str  # where the samples came from (original files or synthetic)
    passed: bool
    error: float
    tolerance: float
    detail: str
    skipped: str = ""  # non-empty: the check did not run (passed is False)


class VerifyData(NamedTuple):
    """Samples for the checks: normalised float32 images ``[N, H, W, C]`` and int32 labels ``[N]``."""

    dataset: str
    x_train: np.ndarray  # [N, H, W, C] float32; the trajectory trains on the first steps·batch samples in order
    y_train: np.ndarray  # [N] int32
    x_eval: np.ndarray  # [T, H, W, C] float32; held out: accuracies and MASC predictions
    y_eval: np.ndarray  # [T] int32
    source: str


# ----------------------------------------------------------------------------------------------------- data


SYNTHETIC = "synthetic"  # how the source of synthetic samples begins


def synthetic_data(dataset: str, num_train: int, num_eval: int, *, seed: int = 0) -> VerifyData:
    """Learnable synthetic images shaped like ``dataset``: per sample, 1/4 a fixed random class pattern, 3/4 noise.

    Pixels are ``uint8`` normalised with :func:`jaxmem.data.normalize`, like real data; labels are uniform.
    """
    info = dataset_info(dataset)
    rng = np.random.default_rng(seed)
    total = num_train + num_eval
    patterns = rng.integers(0, 256, (info.num_classes, *info.image_shape), dtype=np.uint16)
    labels = rng.integers(0, info.num_classes, total).astype(np.int32)
    noise = rng.integers(0, 256, (total, *info.image_shape), dtype=np.uint16)
    images = normalize(dataset, ((patterns[labels] + 3 * noise) // 4).astype(np.uint8))
    return VerifyData(dataset, images[:num_train], labels[:num_train], images[num_train:], labels[num_train:],
                      f"{SYNTHETIC} {'×'.join(map(str, info.image_shape))}")


def load_verify_data(dataset: str, data_dir: str | os.PathLike | None, *, num_train: int, num_eval: int,
                     seed: int = 0) -> VerifyData:
    """The first ``num_train`` train and ``num_eval`` test samples of the original files, in file order.

    ``data_dir`` ``None`` means env ``JAXMEM_DATA_DIR``. Without the files (always the case for CIFAR-10 here),
    falls back to :func:`synthetic_data` and says so in ``source``.
    """
    try:
        files = load_dataset(dataset, data_dir, source="files")
    except FileNotFoundError:
        data = synthetic_data(dataset, num_train, num_eval, seed=seed)
        return data._replace(source=data.source + f" ({dataset} files not found)")
    if len(files.x_train) < num_train or len(files.x_test) < num_eval:
        raise ValueError(f"{dataset} has {len(files.x_train)} train / {len(files.x_test)} test samples; "
                         f"the checks asked for {num_train} / {num_eval}")
    return VerifyData(dataset, normalize(dataset, files.x_train[:num_train]), files.y_train[:num_train],
                      normalize(dataset, files.x_test[:num_eval]), files.y_test[:num_eval], files.source)


# ------------------------------------------------------------------------------------------------ reference


def _reference_class(model_name: str):
    framework = FRAMEWORKS[model_name]
    try:
        if model_name == "mlp":
            from jaxmem.reference.keras_mlp import KerasMLP
            return KerasMLP
        from jaxmem.reference.torch_cnn import TorchReference
        return TorchReference
    except ImportError as missing:
        raise ReferenceUnavailable(f"the {framework} reference for the {model_name} is unavailable ({missing}); "
                                   f"{INSTALL_HINT}") from None


def make_reference(model_name: str, image_shape: tuple[int, int, int], num_classes: int, spec: TrainSpec, *,
                   dtype: str = "float32"):
    """The reference implementation of ``model_name`` (``KerasMLP`` or ``TorchReference``) with ``spec``'s optimiser.

    Raises:
      ReferenceUnavailable: the framework is not installed.
    """
    _check_model(model_name)
    return _reference_class(model_name)(image_shape, num_classes, optimizer=spec.optimizer,
                                        learning_rate=spec.learning_rate, momentum=spec.momentum, dtype=dtype)


def to_framework(model_name: str) -> Callable:
    """The jaxmem params -> reference weights converter of ``model_name``."""
    return {"mlp": convert.mlp_to_keras, "cnn": convert.cnn_to_torch}[model_name]


def from_framework(model_name: str) -> Callable:
    """The reference weights -> jaxmem params converter of ``model_name``."""
    return {"mlp": convert.keras_to_mlp, "cnn": convert.torch_to_cnn}[model_name]


def _check_model(model_name: str) -> None:
    if model_name not in FRAMEWORKS:
        raise ValueError(f"no reference implementation for model {model_name!r}; expected one of {list(FRAMEWORKS)}")


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"verification covers the input shapes of {list(DATASETS)}, got {dataset!r}")


# ----------------------------------------------------------------------------------------------- jaxmem side


@contextlib.contextmanager
def _precision(dtype: str = "float32"):
    """Full-precision matmuls (float32, not TF32, on GPUs); float64 enabled when asked."""
    with contextlib.ExitStack() as stack:
        if dtype == "float64":
            stack.enter_context(jax.enable_x64(True))
        stack.enter_context(jax.default_matmul_precision("highest"))
        yield


def _named(params) -> dict[str, np.ndarray]:
    """``{"fc1/kernel": array, …}`` as float64 numpy (exact for float32 weights)."""
    return {"/".join(path): np.asarray(leaf, np.float64) for path, leaf in flatten_dict(params).items()}


def _as_dtype(state: MemberState, tx, dtype: str) -> MemberState:
    """``state`` with params in ``dtype`` and a fresh optimiser state (call inside :func:`_precision`)."""
    params = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), state.params)
    return state._replace(params=params, opt_state=tx.init(params))


def _train_jax(step: Callable, state: MemberState, x: np.ndarray, y: np.ndarray, steps: int,
               batch_size: int) -> tuple[MemberState, np.ndarray]:
    """``steps`` calls of ``step`` (jaxmem's jitted ``train_step``) on consecutive batches: (state, losses [S])."""
    dtype = jax.tree.leaves(state.params)[0].dtype
    weights = jnp.ones(batch_size, dtype)
    dropout_key = jax.random.key(0)  # the reference models have no dropout, nor do these
    losses = []
    for index in range(steps):
        batch = slice(index * batch_size, (index + 1) * batch_size)
        state, loss, _ = step(state, jnp.asarray(x[batch], dtype), jnp.asarray(y[batch]), weights, dropout_key)
        losses.append(loss)
    return state, np.asarray(jax.device_get(losses), np.float64)


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == labels) * 100)


# ------------------------------------------------------------------------------------------------ measures


def relative_max_error(ours, theirs) -> float:
    """``max |ours − theirs| / max |theirs|`` (0 when both are all zero)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f"shapes differ: ours {ours.shape}, reference {theirs.shape}")
    scale = np.abs(theirs).max(initial=0.0)
    error = np.abs(ours - theirs).max(initial=0.0)
    return 0.0 if error == 0 else float(error / max(scale, np.finfo(np.float32).tiny))


def update_errors(initial, ours, theirs) -> dict[str, float]:
    """Per weight tensor: ``‖w_ours − w_theirs‖ / ‖w_theirs − w_initial‖`` (params pytrees of one layout).

    A tensor that neither side moved scores 0; one that only ours moved scores ``inf``.
    """
    initial, ours, theirs = _named(initial), _named(ours), _named(theirs)
    if not initial.keys() == ours.keys() == theirs.keys():
        raise ValueError(f"weight names differ: {sorted(ours)} vs {sorted(theirs)}")
    errors = {}
    for name in initial:
        moved = np.linalg.norm(theirs[name] - initial[name])
        gap = np.linalg.norm(ours[name] - theirs[name])
        errors[name] = 0.0 if gap == 0 else (float(gap / moved) if moved > 0 else float("inf"))
    return errors


def trajectory_divergence(initial, ours, theirs) -> float:
    """``‖θ_ours − θ_theirs‖ / ‖θ_theirs − θ_initial‖`` over all weights at once.

    ``inf`` when the reference did not move at all: a trajectory that goes nowhere verifies nothing.
    """
    initial, ours, theirs = _named(initial), _named(ours), _named(theirs)
    if not initial.keys() == ours.keys() == theirs.keys():
        raise ValueError(f"weight names differ: {sorted(ours)} vs {sorted(theirs)}")
    gap = np.sqrt(sum(np.sum((ours[name] - theirs[name]) ** 2) for name in initial))
    moved = np.sqrt(sum(np.sum((theirs[name] - initial[name]) ** 2) for name in initial))
    return float(gap / moved) if moved > 0 else float("inf")


def _worst(errors: dict[str, float]) -> tuple[str, float]:
    name = max(errors, key=errors.get)
    return name, errors[name]


# ---------------------------------------------------------------------------------------------------- checks


class _Setup(NamedTuple):
    model_name: str
    model: object  # flax module
    tx: object  # optax transformation
    spec: TrainSpec
    state: MemberState  # initial float32 state
    data: VerifyData
    num_classes: int


def _setup(model_name: str, data: VerifyData, seed: int) -> _Setup:
    _check_model(model_name)
    _check_dataset(data.dataset)
    spec = paper_train_spec(data.dataset, model_name)
    num_classes = dataset_info(data.dataset).num_classes
    model = get_model(model_name, num_classes)
    tx = make_optimizer(spec)
    with _precision():
        state = jax.jit(partial(init_member, model, tx))(jax.random.key(seed), jnp.asarray(data.x_train[:1]))
    return _Setup(model_name, model, tx, spec, state, data, num_classes)


def _result(setup: _Setup, reference, check: str, error: float, tolerance: float, detail: str,
            passed: bool | None = None) -> CheckResult:
    return CheckResult(check, setup.model_name, reference.framework, setup.data.dataset, setup.data.source,
                       bool(error <= tolerance if passed is None else passed), float(error), tolerance, detail)


def _forward(setup: _Setup, reference, params, x: np.ndarray, converter: Callable) -> CheckResult:
    reference.set_weights(converter(params))
    with _precision():
        logits, activations = setup.model.apply({"params": params}, jnp.asarray(x))
    ref_logits, ref_activations = reference.forward(x)
    errors = {"logits": relative_max_error(logits, ref_logits)}
    errors.update({layer: relative_max_error(activations[layer], ref_activations[layer])
                   for layer in probe_layers(setup.model_name)})
    name, error = _worst(errors)
    return _result(setup, reference, "forward", error, TOLERANCES.forward,
                   f"{len(x)} samples; logits + {len(errors) - 1} probe layers; worst {name}")


def _optimiser_name(spec: TrainSpec) -> str:
    if spec.optimizer == "sgd":
        return f"sgd(lr={spec.learning_rate:g}, momentum={spec.momentum:g})"
    return f"adam(lr={spec.learning_rate:g})"


def _training(setup: _Setup, reference, steps: int, batch_size: int, dtype: str) -> tuple[CheckResult, CheckResult,
                                                                                          object]:
    """(b) and (c) from one run: both sides take ``steps`` steps from jaxmem's initial weights cast to ``dtype``.

    Returns the one-step result (weights after step 1), the trajectory result and jaxmem's trained params (float32).
    """
    data, model, tx = setup.data, setup.model, setup.tx
    convert_in, convert_out = to_framework(setup.model_name), from_framework(setup.model_name)
    with _precision(dtype):
        start = _as_dtype(setup.state, tx, dtype)
        step = jax.jit(partial(train_step, model, tx))
        first, losses = _train_jax(step, start, data.x_train, data.y_train, 1, batch_size)
        state, more = _train_jax(step, first, data.x_train[batch_size:], data.y_train[batch_size:], steps - 1,
                                 batch_size)
        losses = np.concatenate([losses, more])
        logits, _ = model.apply({"params": state.params}, jnp.asarray(data.x_eval, dtype))
    reference.set_weights(convert_in(start.params))
    ref_losses = []
    for index in range(steps):
        batch = slice(index * batch_size, (index + 1) * batch_size)
        ref_losses.append(reference.train_step(data.x_train[batch], data.y_train[batch]))
        if index == 0:
            ref_first = convert_out(reference.get_weights())
    ref_losses = np.asarray(ref_losses)
    ref_logits, _ = reference.forward(data.x_eval)
    ref_params = convert_out(reference.get_weights())
    step_tolerance = TOLERANCES.one_step_float64 if dtype == "float64" else TOLERANCES.one_step_float32

    name, step_error = _worst(update_errors(start.params, first.params, ref_first))
    step_error = max(step_error, abs(losses[0] - ref_losses[0]) / abs(ref_losses[0]))
    one_step = _result(setup, reference, "one_step", step_error, step_tolerance,
                       f"{dtype}, {_optimiser_name(setup.spec)}, batch {batch_size}; worst tensor {name}; "
                       f"loss {losses[0]:.6f} vs {ref_losses[0]:.6f}")

    divergence = trajectory_divergence(start.params, state.params, ref_params)
    loss_error = float(np.max(np.abs(losses - ref_losses)) / np.max(np.abs(ref_losses)))
    accuracy, ref_accuracy = _accuracy(np.asarray(logits), data.y_eval), _accuracy(ref_logits, data.y_eval)
    tolerance = TOLERANCES.trajectory_float64 if dtype == "float64" else TOLERANCES.trajectory_float32
    passed = (divergence <= tolerance and loss_error <= tolerance
              and abs(accuracy - ref_accuracy) <= TOLERANCES.accuracy_points)
    detail = (f"{dtype}, {steps} steps × batch {batch_size}, fixed order; loss {losses[0]:.4f}→{losses[-1]:.4f} "
              f"(max rel. diff {loss_error:.1e}); eval accuracy {accuracy:.2f}% vs {ref_accuracy:.2f}% "
              f"(tol ±{TOLERANCES.accuracy_points} pt)")
    trajectory = _result(setup, reference, "trajectory", divergence, tolerance, detail, passed)
    return one_step, trajectory, jax.tree.map(lambda leaf: np.asarray(leaf, np.float32), state.params)


def _masc(setup: _Setup, reference, params, num_fit: int) -> CheckResult:
    """MASC (exact mode) per probe layer on jaxmem's and the reference's float32 activations of ``params``."""
    data = setup.data
    reference.set_weights(to_framework(setup.model_name)(params))
    x_fit, y_fit = data.x_train[:num_fit], data.y_train[:num_fit]
    with _precision():
        _, fit_ours = setup.model.apply({"params": params}, jnp.asarray(x_fit))
        _, eval_ours = setup.model.apply({"params": params}, jnp.asarray(data.x_eval))
    _, fit_theirs = reference.forward(x_fit)
    _, eval_theirs = reference.forward(data.x_eval)
    disagreement, accuracies = {}, {}
    for layer in probe_layers(setup.model_name):
        ours = masc.predict(masc.fit(np.asarray(fit_ours[layer]), y_fit, setup.num_classes, precision="exact"),
                            np.asarray(eval_ours[layer]))
        theirs = masc.predict(masc.fit(fit_theirs[layer], y_fit, setup.num_classes, precision="exact"),
                              eval_theirs[layer])
        disagreement[layer] = float(np.mean(np.asarray(ours) != np.asarray(theirs)))
        accuracies[layer] = (float(np.mean(np.asarray(ours) == data.y_eval) * 100),
                             float(np.mean(np.asarray(theirs) == data.y_eval) * 100))
    name, error = _worst(disagreement)
    summary = ", ".join(f"{layer} {ours:.1f}/{theirs:.1f}" for layer, (ours, theirs) in accuracies.items())
    return _result(setup, reference, "masc", error, TOLERANCES.masc_disagreement,
                   f"fit on {num_fit}, predict {len(data.x_eval)}; most disagreement at {name}; "
                   f"accuracy % ours/theirs: {summary}")


def run_pair(model_name: str, data: VerifyData, *, steps: int, seed: int = 0, batch_size: int | None = None,
             training_dtype: str | None = None, masc_samples: int = 2000,
             forward_samples: int = 64) -> list[CheckResult]:
    """All four checks, in order, for one model against its reference framework on ``data``.

    Args:
      model_name: ``"mlp"`` (vs TensorFlow/Keras) or ``"cnn"`` (vs PyTorch).
      data: from :func:`load_verify_data` or :func:`synthetic_data`; ``x_train`` needs at least
        ``steps · batch`` samples.
      steps: trajectory length.
      seed: jaxmem's initialisation seed (``jax.random.key(seed)``); the reference loads those weights.
      batch_size: batch of the one-step and trajectory checks; the paper preset's by default.
      training_dtype: ``"float32"`` or ``"float64"`` for checks (b) and (c); :data:`TRAINING_DTYPES` by default.
        Checks (a) and (d) always run in float32.
      masc_samples: MASC is fitted on the first this-many training samples (the trajectory's, in order).
      forward_samples: eval samples in the forward check.

    Returns:
      ``[forward, one_step, trajectory, masc]`` results.

    Raises:
      ReferenceUnavailable: the reference framework is not installed.
    """
    setup = _setup(model_name, data, seed)
    batch_size = batch_size or setup.spec.batch_size
    dtype = training_dtype or TRAINING_DTYPES[model_name]
    if dtype not in ("float32", "float64"):
        raise ValueError(f"training_dtype must be 'float32' or 'float64', got {dtype!r}")
    needed = steps * batch_size
    if steps < 1 or len(data.x_train) < needed:
        raise ValueError(f"steps must be >= 1 and the data must hold steps × batch = {needed} training samples; "
                         f"got steps={steps} and {len(data.x_train)} samples")
    reference = make_reference(model_name, data.x_train.shape[1:], setup.num_classes, setup.spec)
    forward = _forward(setup, reference, setup.state.params, data.x_eval[:forward_samples], to_framework(model_name))
    trainee = reference if dtype == "float32" else make_reference(model_name, data.x_train.shape[1:],
                                                                  setup.num_classes, setup.spec, dtype=dtype)
    one_step, trajectory, trained = _training(setup, trainee, steps, batch_size, dtype)
    masc_result = _masc(setup, reference, trained, min(masc_samples, len(data.x_train)))
    return [forward, one_step, trajectory, masc_result]


def _skipped(model_name: str, data: VerifyData, reason: str) -> list[CheckResult]:
    return [CheckResult(check, model_name, FRAMEWORKS[model_name], data.dataset, data.source, False, float("nan"),
                        float("nan"), "", skipped=reason) for check in CHECKS]


def run_all(data_dir: str | os.PathLike | None = None, *, steps: int = 50, cnn_steps: int = 20, seed: int = 0,
            models: Sequence[str] = ("mlp", "cnn"), datasets: Sequence[str] = DATASETS, eval_samples: int = 1000,
            masc_samples: int = 2000) -> list[CheckResult]:
    """Every check for every model and input shape; what ``jaxmem verify`` runs.

    Args:
      data_dir: folder with the original files (``None``: env ``JAXMEM_DATA_DIR``). MNIST-shaped checks use real
        MNIST when found, CIFAR-shaped ones real CIFAR-10 when found; otherwise synthetic images (see
        :func:`synthetic_data`), named in each result's ``data``. A folder given here that holds none of
        ``datasets`` is a mistake: ``FileNotFoundError`` before any check runs.
      steps: MLP trajectory length (batch 32, float32).
      cnn_steps: CNN trajectory length (batch 128 for MNIST, 32 for CIFAR-10; float64, so slower).
      seed: jaxmem's initialisation seed.
      models, datasets: subsets of :data:`FRAMEWORKS` and :data:`DATASETS`.
      eval_samples: held-out samples for accuracies and MASC predictions.
      masc_samples: training samples MASC is fitted on.

    Returns:
      Results in (dataset, model, check) order; a missing framework gives skipped results, not an exception.
    """
    for model_name in models:
        _check_model(model_name)
    for dataset in datasets:
        _check_dataset(dataset)
    lengths = {"mlp": steps, "cnn": cnn_steps}
    samples = {dataset: load_verify_data(dataset, data_dir, num_train=max(
        [lengths[m] * paper_train_spec(dataset, m).batch_size for m in models] + [masc_samples]),
        num_eval=eval_samples, seed=seed) for dataset in datasets}
    if data_dir is not None and all(data.source.startswith(SYNTHETIC) for data in samples.values()):
        raise FileNotFoundError(f"{data_dir} holds no {' or '.join(datasets)} files: give the folder that holds "
                                f"them, or no data folder to check on synthetic images")
    results = []
    for dataset, data in samples.items():
        for model_name in models:
            try:
                results += run_pair(model_name, data, steps=lengths[model_name], seed=seed, masc_samples=masc_samples)
            except ReferenceUnavailable as missing:
                results += _skipped(model_name, data, str(missing))
    return results


def status(result: CheckResult) -> str:
    """``"PASS"``, ``"FAIL"`` or ``"SKIP"``."""
    if result.skipped:
        return "SKIP"
    return "PASS" if result.passed else "FAIL"


def format_report(results: Sequence[CheckResult]) -> str:
    """A short plain-text table, one line per check, then where the data came from and a summary line."""
    header = f"{'model':<5} {'reference':<34} {'input':<8} {'check':<10} {'result':<6} {'error':>9} {'tol':>8}  detail"
    lines = ["jaxmem verify: jaxmem vs independent reference frameworks", header, "-" * len(header)]
    for r in results:
        lines.append(f"{r.model:<5} {r.framework:<34} {r.dataset:<8} {r.check:<10} {status(r):<6} {r.error:>9.1e} "
                     f"{r.tolerance:>8.0e}  {r.skipped or r.detail}")
    sources = dict.fromkeys((r.dataset, r.data) for r in results)
    lines += [f"data {dataset}: {source}" for dataset, source in sources]
    counts = [sum(status(r) == s for r in results) for s in ("PASS", "FAIL", "SKIP")]
    lines.append("{} passed, {} failed, {} skipped".format(*counts))
    return "\n".join(lines)
