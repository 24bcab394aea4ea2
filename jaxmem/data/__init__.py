"""Datasets, normalisation and label corruption: everything between the files on disk and the arrays a member
program trains on.

* :mod:`.loading`: :func:`load_dataset` (original files, tfds, scikit-learn's digits), :func:`subset`,
  :func:`with_train_labels`;
* :mod:`.normalization`: :func:`normalize`, ``uint8`` pixels to the float32 inputs the models see;
* :mod:`.corruption`: the label rules (:func:`corrupt_labels`, :func:`corrupt_labels_per_member`,
  :func:`pairflip_labels_per_member`), :func:`member_train_labels` and :func:`subspace_grouping` (the labels that
  group a layer's features into class subspaces).

Every public name is importable from ``jaxmem.data`` itself.
"""
from jaxmem.data.corruption import (LABEL_NOISE_TAG, REFERENCE_SEED, corrupt_labels, corrupt_labels_per_member,
                                    member_train_labels, pairflip_labels_per_member, reference_strict,
                                    subspace_grouping)
from jaxmem.data.loading import (DATA_DIR_ENV, DATASETS, DIGITS_NUM_TRAIN, SOURCES, Dataset, DatasetInfo,
                                 dataset_info, load_dataset, read_idx, subset, with_train_labels)
from jaxmem.data.normalization import normalize

__all__ = ["DATASETS", "DATA_DIR_ENV", "DIGITS_NUM_TRAIN", "Dataset", "DatasetInfo", "LABEL_NOISE_TAG",
           "REFERENCE_SEED", "SOURCES", "corrupt_labels", "corrupt_labels_per_member", "dataset_info",
           "load_dataset", "member_train_labels", "normalize", "pairflip_labels_per_member", "read_idx",
           "reference_strict", "subset", "subspace_grouping", "with_train_labels"]
