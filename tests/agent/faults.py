"""A fault-injecting stand-in for the submit endpoint, shared by the agent tests.

Each request body must be JSON with a ``pcs_id``; the server pops the next scripted
action for that id (default ``"200"``) and logs what it did, so a test can predict the
exact outcome of every record and check that nothing was lost.

Actions: ``"200"``, ``"202"`` (verdict JSON), any other status code as text (``"500"``,
``"401"`` …), ``"429:N"`` / ``"503:N"`` (with ``Retry-After: N``), ``"429:date"`` (an
HTTP-date ``Retry-After`` 7 s after ``FaultServer.now``), ``"reset"`` (abort the TCP
connection), ``"slow"`` (answer 200 after ``slow_s``, beyond the client's timeout).
``GET /ready`` answers the statuses queued in ``ready``, then 200.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
from collections import defaultdict

from aiohttp import web

__all__ = ["FakeSleep", "FaultServer"]


class FakeSleep:
    """Records every requested wait and returns at once (yielding to the loop)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


class ManualClock:
    """Monotonic time that moves only when the test calls :meth:`advance`.

    ``sleep`` (pass it as the agent's ``sleep``, the clock itself as its ``clock``)
    waits until the clock reaches its deadline, so a test decides when a followed file
    is polled again and when ``--idle-flush`` is due, without sleeping for real.
    :meth:`sleeping` is the test's sync point: something (the input pump, caught up
    with the file) waits on the clock.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.waits: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._asleep: asyncio.Event | None = None

    def __call__(self) -> float:
        return self.now

    def _event(self) -> asyncio.Event:
        if self._asleep is None:  # made on the loop that uses it
            self._asleep = asyncio.Event()
        return self._asleep

    def _forget(self, fut: asyncio.Future[None]) -> None:
        self._sleepers = [(t, f) for t, f in self._sleepers if f is not fut]
        if not self._sleepers:
            self._event().clear()

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, fut))
        self._event().set()
        try:
            await fut
        finally:  # woken or cancelled: no longer asleep
            self._forget(fut)

    async def sleeping(self, timeout: float = 10.0) -> None:
        """Return once something sleeps on this clock (at most ``timeout`` real s)."""
        await asyncio.wait_for(self._event().wait(), timeout)

    async def advance(self, seconds: float) -> None:
        """Move the clock and wake the sleepers whose deadline has come."""
        self.now += seconds
        for t, fut in list(self._sleepers):
            if t <= self.now:
                self._forget(fut)
                if not fut.done():
                    fut.set_result(None)
        await asyncio.sleep(0)


class FaultServer:
    def __init__(self, *, slow_s: float = 1.0, now: float = 1_700_000_000.0) -> None:
        self.script: dict[str, list[str]] = defaultdict(list)
        self.log: list[tuple[str, str]] = []
        self.bodies: dict[str, list[bytes]] = defaultdict(list)
        self.slow_s = slow_s
        self.now = now
        self.inflight = 0
        self.max_inflight = 0
        self.peers: set[object] = set()
        # Statuses ``GET /ready`` answers in turn (the agent's probe); then 200.
        self.ready: list[int] = []
        self.probes = 0
        self.tenants: list[str | None] = []  # X-Tenant-Id of each submission

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/pcs/submit", self.handle)
        app.router.add_get("/ready", self.handle_ready)
        return app

    async def handle_ready(self, _request: web.Request) -> web.StreamResponse:
        self.probes += 1
        status = self.ready.pop(0) if self.ready else 200
        return web.Response(text="OK" if status == 200 else "not ready", status=status)

    def outcomes(self, pcs_id: str) -> list[str]:
        return [a for k, a in self.log if k == pcs_id]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        pcs_id = json.loads(body)["pcs_id"]
        queue = self.script.get(pcs_id)
        action = queue.pop(0) if queue else "200"
        self.log.append((pcs_id, action))
        self.bodies[pcs_id].append(body)
        self.tenants.append(request.headers.get("X-Tenant-Id"))
        if request.transport is not None:
            self.peers.add(request.transport.get_extra_info("peername"))
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return await self._act(request, pcs_id, action)
        finally:
            self.inflight -= 1

    async def _act(
        self, request: web.Request, pcs_id: str, action: str
    ) -> web.StreamResponse:
        if action == "reset":
            assert request.transport is not None
            request.transport.abort()
            raise web.HTTPInternalServerError()  # never reaches the client
        if action == "slow":
            await asyncio.sleep(self.slow_s)
            action = "200"
        if action in ("200", "202"):
            await asyncio.sleep(0.005)  # long enough for concurrent requests to overlap
            verdict = {
                "pcs_id": pcs_id,
                "accepted": True,
                "escalated": action == "202",
                "recomputed_D_hat": 1.0,
                "recomputed_budget": 0.5,
                "reason": "" if action == "200" else "regime mismatch",
            }
            return web.json_response(verdict, status=int(action))
        code, _, hint = action.partition(":")
        headers = {}
        if hint == "date":
            headers["Retry-After"] = email.utils.formatdate(self.now + 7, usegmt=True)
        elif hint:
            headers["Retry-After"] = hint
        return web.json_response(
            {"error": f"scripted {code}"}, status=int(code), headers=headers
        )
