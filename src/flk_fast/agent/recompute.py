"""Full recomputation: a PCS checked field by field against its window's raw events.

A server can recompute D̂ from the PCS's own N_j but must take coh★, r and the Merkle
root on trust. A verifier who holds the window's events need not: this module reads
them with the agent's parser (:func:`flk_fast.agent.source.read_batch`), builds the
same canonical rows (:func:`flk_fast.agent.windows.canonical_rows`) and runs the same
:func:`flk_fast.agent.summarize.compute_signals` with the PCS's scales and seed, so a
PCS the agent built from these events matches exactly (every field is rounded by the
same code). ``flk verify PCS.json --data WINDOW.csv`` is the command-line form.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from flk_fast.agent.source import EventBatch, read_batch
from flk_fast.agent.summarize import SummaryParams, compute_signals, max_abs_coordinate
from flk_fast.agent.windows import canonical_rows
from flk_fast.errors import InputError
from flk_fast.protocol.pcs import PCS, compute_pcs_id

__all__ = ["FIELDS", "FieldCheck", "RecomputeReport", "recompute_pcs"]

#: The fields recomputed from the events, in report order.
FIELDS = (
    "N_j",
    "D_hat",
    "coh_star",
    "v_star",
    "r",
    "regime",
    "budget",
    "merkle_root",
    "pcs_id",
)


@dataclass(frozen=True, slots=True)
class FieldCheck:
    """One field: the PCS's ``claimed`` value and the ``recomputed`` one (JSON types:
    a dict for N_j, a list for v_star). ``match`` is exact equality: every field is
    deterministic and rounded the same way on both sides."""

    field: str
    claimed: Any
    recomputed: Any

    @property
    def match(self) -> bool:
        return bool(self.claimed == self.recomputed)


@dataclass(frozen=True, slots=True)
class RecomputeReport:
    """Result of :func:`recompute_pcs`: one :class:`FieldCheck` per field of
    :data:`FIELDS`, over ``events`` events."""

    events: int
    checks: tuple[FieldCheck, ...]

    @property
    def ok(self) -> bool:
        """True when every field matches."""
        return all(c.match for c in self.checks)

    @property
    def mismatches(self) -> tuple[str, ...]:
        """Names of the fields that do not match, in report order."""
        return tuple(c.field for c in self.checks if not c.match)

    def __getitem__(self, field: str) -> FieldCheck:
        for c in self.checks:
            if c.field == field:
                return c
        raise KeyError(field)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``flk verify --data --json``)."""
        return {
            "match": self.ok,
            "events": self.events,
            "mismatches": list(self.mismatches),
            "fields": [
                {
                    "field": c.field,
                    "claimed": c.claimed,
                    "recomputed": c.recomputed,
                    "match": c.match,
                }
                for c in self.checks
            ],
        }


def _batch_from_array(events: ArrayLike) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """(t, xyz, tails) of an (n, 4) array of ``t, x, y, z``; the tails are Python's
    shortest round-trip text of each coordinate (``repr``), which is what an input
    file written by Python or any JSON encoder holds."""
    arr = np.asarray(events, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InputError(
            f"events must be an (n, 4) array of timestamp, x, y, z; got shape "
            f"{arr.shape}"
        )
    if not np.isfinite(arr).all():
        row = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise InputError(f"events must be finite; row {row} is {arr[row].tolist()}")
    tails = [f"{x!r},{y!r},{z!r}".encode() for x, y, z in arr[:, 1:].tolist()]
    return arr[:, 0].copy(), np.ascontiguousarray(arr[:, 1:]), tails


def recompute_pcs(
    events: str | os.PathLike[str] | EventBatch | ArrayLike,
    pcs: PCS,
    *,
    fmt: str = "auto",
    merkle_scheme: str = "sha256-hexcat",
    chunk_size: int = 64,
    n_threads: int = 0,
) -> RecomputeReport:
    """Recompute every signal of ``pcs`` from the raw events of its window.

    N_j, D̂, coh★ and v★ (with the PCS's scales and seed), r, regime and budget, the
    Merkle root and ``pcs_id`` (with the PCS's epoch and shard_id) are computed from
    the events exactly as the agent computes them and compared with the claims.

    Parameters
    ----------
    events : path, EventBatch or array_like (n, 4)
        The window: a CSV (``timestamp,x,y,z``) or JSONL file as the agent reads it
        (``"-"``: stdin), a batch from :func:`flk_fast.agent.source.read_batch`, or an
        array of ``timestamp, x, y, z`` rows (coordinates then enter the canonical
        rows as Python's shortest text, ``repr``).
    pcs : PCS
        The summary to check (e.g. from :func:`flk_fast.protocol.codec.decode_pcs`).
    fmt : {"auto", "csv", "jsonl"}
        File format (auto: by extension, else by the first byte).
    merkle_scheme, chunk_size : str, int
        How the agent built its Merkle root (the PCS does not say); the defaults are
        the agent's.
    n_threads : int
        Kernel threads (0: the kernels' default); never changes a result.

    Returns
    -------
    RecomputeReport

    Raises
    ------
    InputError
        The events cannot be read, a line is malformed, or there are none.
    flk_fast.errors.KernelInputError
        The PCS's scales or seed cannot drive the kernels.

    Examples
    --------
    >>> from flk_fast.agent.summarize import summarize
    >>> events = [[1.0, 0.1, 0.2, 0.3], [2.0, 0.5, 0.5, 0.5], [3.0, 0.9, 0.1, 0.4]]
    >>> rows = b"\\n".join(b"%.9f,%r,%r,%r" % tuple(e) for e in events)
    >>> rows[:24]
    b'1.000000000,0.1,0.2,0.3\\n'
    >>> pcs = summarize([e[1:] for e in events], rows, shard_id="s", epoch=1)
    >>> report = recompute_pcs(events, pcs)
    >>> report.ok, report.events
    (True, 3)
    >>> import msgspec
    >>> forged = msgspec.structs.replace(pcs, coh_star=0.9)
    >>> recompute_pcs(events, forged).mismatches
    ('coh_star',)
    """
    if isinstance(events, EventBatch):
        t, xyz, tails = events.t, events.xyz, events.tails
    elif isinstance(events, str | os.PathLike):
        batch = read_batch(events, fmt=fmt, max_abs=max_abs_coordinate(pcs.scales))
        t, xyz, tails = batch.t, batch.xyz, batch.tails
    else:
        t, xyz, tails = _batch_from_array(events)
    if len(tails) == 0:
        where = os.fspath(events) if isinstance(events, str | os.PathLike) else "events"
        raise InputError("no events (a PCS covers at least one)", source=where)
    params = SummaryParams(
        scales=tuple(pcs.scales),
        seed=pcs.seed,
        merkle_scheme=merkle_scheme,
        chunk_size=chunk_size,
        n_threads=n_threads,
    )
    sig = compute_signals(xyz, canonical_rows(t, tails), params)
    recomputed: dict[str, Any] = {
        "N_j": {str(s): n for s, n in zip(params.scales, sig.n_j, strict=True)},
        "D_hat": sig.d_hat,
        "coh_star": sig.coh_star,
        "v_star": [float(v) for v in sig.v_star],
        "r": sig.r,
        "regime": sig.regime,
        "budget": sig.budget,
        "merkle_root": sig.merkle_root,
        "pcs_id": compute_pcs_id(sig.merkle_root, pcs.epoch, pcs.shard_id),
    }
    claimed: dict[str, Any] = {
        "N_j": dict(pcs.N_j),
        "D_hat": pcs.D_hat,
        "coh_star": pcs.coh_star,
        "v_star": list(pcs.v_star),
        "r": pcs.r,
        "regime": pcs.regime,
        "budget": pcs.budget,
        "merkle_root": pcs.merkle_root,
        "pcs_id": pcs.pcs_id,
    }
    return RecomputeReport(
        events=len(tails),
        checks=tuple(FieldCheck(f, claimed[f], recomputed[f]) for f in FIELDS),
    )
