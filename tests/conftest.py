"""Shared pytest fixtures: where the original dataset files are (env ``JAXMEM_DATA_DIR``); one on-disk cache of
compiled XLA programs for the whole run."""
import os
import tempfile
from pathlib import Path

import pytest

# Most of the suite's time is XLA compiling the same small programs again: in each test's fresh jitted closures,
# in both xdist workers and in the CLI subprocesses of the fault tests (which inherit these variables). JAX's
# persistent cache keys each program by its HLO, the JAX version and the devices, so a hit is the same executable.
_XLA_CACHE = {"JAX_COMPILATION_CACHE_DIR": str(Path(tempfile.gettempdir()) / "jaxmem-tests-xla-cache"),
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
for _name, _value in _XLA_CACHE.items():
    os.environ.setdefault(_name, _value)

import jax  # noqa: E402  (after the variables, which JAX reads when it is imported)

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                  int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))

_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")


@pytest.fixture(scope="session")
def data_dir() -> Path | None:
    """``JAXMEM_DATA_DIR`` as a Path, or None when it is unset."""
    value = os.environ.get("JAXMEM_DATA_DIR")
    return Path(value) if value else None


@pytest.fixture(scope="session")
def mnist_dir(data_dir) -> Path:
    """The directory holding the four original MNIST IDX files (``data_dir`` itself or ``data_dir/mnist``)."""
    if data_dir is None:
        pytest.skip("JAXMEM_DATA_DIR is not set; real-MNIST checks need the original IDX files")
    for directory in (data_dir, data_dir / "mnist"):
        if all((directory / f).exists() or (directory / f"{f}.gz").exists() for f in _MNIST_FILES):
            return directory
    pytest.skip(f"JAXMEM_DATA_DIR={data_dir} holds no MNIST IDX files (nor its mnist/ subfolder); "
                "real-MNIST checks need the original IDX files")


@pytest.fixture(scope="session")
def train_digits_run(tmp_path_factory):
    """``train(name, *flags)``: a small digits run trained by ``jaxmem train`` with these flags; its directory."""
    from jaxmem.cli import main

    def train(name: str, *flags: str) -> Path:
        out = tmp_path_factory.mktemp(name) / "run"
        assert main(["train", "--dataset", "digits", *flags, "--out", str(out), "--quiet"]) == 0
        return out

    return train
