"""Shared pytest fixtures: where the original dataset files are (env ``JAXMEM_DATA_DIR``)."""
import os
from pathlib import Path

import pytest

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
