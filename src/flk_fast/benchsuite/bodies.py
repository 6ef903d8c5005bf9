"""Signed PCS bodies for the load generator: one fresh ``pcs_id`` per request, or a
resend of an earlier body (a dedup hit) with probability ``resend_ratio``.

Bodies are signed *before* a rate's clock starts (:meth:`BodySource.take`): signing
a v0.2 PCS costs 30-60 us of Python, which at 15 000 req/s would be most of the
generator's core and would show up as schedule lag, not as server latency.

The PCS is built the agent's way (:func:`flk_fast.agent.summarize.summarize` over a
small seeded window, then :func:`flk_fast.agent.outbox.stamp`), so a server judges
every body as it judges an agent's: accepted and not escalated. Only ``epoch`` changes
between requests; the signals are computed once (they do not depend on it).
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Any

import msgspec

from flk_fast.agent.outbox import stamp, utc_now
from flk_fast.agent.summarize import summarize
from flk_fast.errors import ConfigError
from flk_fast.protocol.pcs import compute_pcs_id

__all__ = ["BodySource", "load_signer"]

#: How many recent bodies a resend picks from.
_RESEND_POOL = 1024


def load_signer(
    hmac_key_file: str | None = None,
    ed25519_key_file: str | None = None,
    hmac_key_env: str | None = None,
) -> Any:
    """The signer of exactly one key source, as ``flk agent`` loads it."""
    from flk_fast.protocol import signing

    given = [x is not None for x in (hmac_key_file, hmac_key_env, ed25519_key_file)]
    if sum(given) != 1:
        raise ConfigError(
            "give exactly one of --hmac-key-file, --hmac-key-env and --ed25519-key-file"
        )
    if ed25519_key_file is not None:
        return signing.Ed25519Signer(signing.load_ed25519_private(ed25519_key_file))
    return signing.HmacSigner(
        signing.load_hmac_key(path=hmac_key_file, env=hmac_key_env)
    )


class BodySource:
    """``next()`` gives the bytes of the next request.

    ``epoch`` starts at the wall clock in microseconds, so two runs against the same
    server do not collide in its dedup store (SPEC §2: the id depends on the epoch).
    """

    def __init__(
        self,
        signer: Any,
        *,
        shard_id: str = "flk-bench",
        resend_ratio: float = 0.0,
        version: str = "0.2",
        seed: int = 0,
    ) -> None:
        if not 0.0 <= resend_ratio < 1.0:
            raise ConfigError(f"--resend-ratio must be in [0, 1), got {resend_ratio}")
        rng = random.Random(seed)
        points = [[rng.random() for _ in range(3)] for _ in range(64)]
        rows = b"\n".join(
            f"{i:.9f},{x:.6f},{y:.6f},{z:.6f}".encode()
            for i, (x, y, z) in enumerate(points)
        )
        # Round the points as the rows are, so both describe the same events.
        points = [[float(f"{v:.6f}") for v in p] for p in points]
        self._template = summarize(
            points, rows, shard_id=shard_id, epoch=0, version=version
        )
        self._signer = signer
        self._resend_ratio = resend_ratio
        self._rng = random.Random(seed + 1)
        self._recent: deque[bytes] = deque(maxlen=_RESEND_POOL)
        self._epoch = int(time.time() * 1e6)
        self.fresh = 0
        self.resent = 0

    def take(self, n: int) -> list[bytes]:
        """The next ``n`` bodies."""
        return [self.next() for _ in range(n)]

    def next(self) -> bytes:
        if self._recent and self._rng.random() < self._resend_ratio:
            self.resent += 1
            return self._rng.choice(self._recent)
        self._epoch += 1
        t = self._template
        pcs = msgspec.structs.replace(
            t,
            epoch=self._epoch,
            pcs_id=compute_pcs_id(t.merkle_root, self._epoch, t.shard_id),
        )
        pcs = msgspec.structs.replace(pcs, sig=self._signer.sign(pcs))
        body = stamp(pcs, outbox_seq=self.fresh, attempt=1, sent_at=utc_now())
        self.fresh += 1
        self._recent.append(body)
        return body
