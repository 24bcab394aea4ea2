"""The member grid: degrees × seeds as one flat list of :class:`MemberSpec`, validated, and its keys.

Member index ``m`` is the position in that list; it indexes the leading axis of every stacked array (params,
labels ``[M, N]``, keys ``[M]``) and the ``member`` column of the results (``members.csv`` maps it back).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.config import MemberSpec

MAX_SEED = 2**31  # seeds must fit an int32 (the per-member label rule draws from them on device)


def _check_unique(name: str, values: Sequence) -> None:
    if len(values) == 0:
        raise ValueError(f"{name} is empty; need at least one value")
    duplicates = sorted({v for v in values if list(values).count(v) > 1})
    if duplicates:
        raise ValueError(f"{name} has duplicates {duplicates}; each value may appear once")


def member_grid(dataset: str, model: str, degrees: Sequence[float], seeds: Sequence[int],
                label_rule: str = "reference") -> list[MemberSpec]:
    """All (degree, seed) members of one (dataset, model), degree-major: ``m = i_degree * len(seeds) + i_seed``."""
    degrees = [float(d) for d in degrees]
    seeds = list(seeds)
    _check_unique("degrees", degrees)
    _check_unique("seeds", seeds)
    members = [MemberSpec(dataset, model, degree, seed, label_rule) for degree in degrees for seed in seeds]
    return check_members(members)


def check_members(members: Sequence[MemberSpec]) -> list[MemberSpec]:
    """Validate members that are to train in one program; returns them as a list.

    They must be non-empty, share one dataset and one model, have integer seeds in ``[0, 2**31)``, and be
    distinct (two identical members would be the same run twice).
    """
    members = list(members)
    if not members:
        raise ValueError("members is empty; need at least one MemberSpec")
    for name in ("dataset", "model"):
        values = sorted({getattr(m, name) for m in members})
        if len(values) > 1:
            raise ValueError(f"members of one program must share one {name}, got {values}")
    bad_seeds = [m.seed for m in members
                 if not isinstance(m.seed, (int, np.integer)) or isinstance(m.seed, bool) or not 0 <= m.seed < MAX_SEED]
    if bad_seeds:
        raise ValueError(f"member seeds must be integers in [0, 2**31), got {bad_seeds}")
    duplicates = sorted({i for i, m in enumerate(members) if members.index(m) != i})
    if duplicates:
        raise ValueError(f"members at indices {duplicates} repeat an earlier member: "
                         f"{[members[i] for i in duplicates]}")
    return members


def member_keys(members: Sequence[MemberSpec]) -> jax.Array:
    """Typed PRNG keys ``[M]``: ``jax.random.key(member.seed)`` for each member."""
    seeds = jnp.asarray([m.seed for m in members], jnp.uint32)
    return jax.vmap(jax.random.key)(seeds)
