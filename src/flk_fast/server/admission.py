"""SPEC §7 step 0: the refusals that need no body (405, 415, 413 from
``Content-Length``, 401 for an unknown ``X-Tenant-Id``, 429, 503 while loading or while
too many bodies are arriving). None of them can ever be judged, so none is logged: a
flood of junk costs no disk write."""

from __future__ import annotations

from aiohttp import web

from flk_fast.metrics import ServerMetrics

from .answers import JSON, body_error, json_error
from .bodies import DECODABLE, UnsupportedEncodingError
from .keys import TENANT_RE, KeyStore
from .ratelimit import RateLimiter

__all__ = ["Admission"]


class Admission:
    """The step-0 checks of ``IngestService`` (whose state they read)."""

    keys: KeyStore
    metrics: ServerMetrics
    limiter: RateLimiter
    ready: bool
    loading_reason: str
    _max_body: int
    _reading: int
    _max_reading: int
    _retry_after: dict[str, str]

    def admit(self, request: web.Request) -> str | web.Response:
        """The request's tenant ("" for none), or the answer that refuses it."""
        if request.method != "POST":
            return json_error(405, "method_not_allowed", {"Allow": "POST"})
        headers = request.headers
        ctype = headers.get("Content-Type")
        if ctype != JSON and request.content_type != JSON:
            return json_error(415, "unsupported_media_type", expected=JSON)
        cenc = (headers.get("Content-Encoding") or "").strip().lower()
        if cenc and cenc not in DECODABLE:
            # Refused before the body: read_body would say the same after reading it.
            return body_error(UnsupportedEncodingError(cenc))
        clen = request.content_length
        if clen is not None and clen > self._max_body:
            return json_error(413, "body_too_large", limit=self._max_body)
        tenant = self.keys.tenant_of(headers.get("X-Tenant-Id", ""))
        if (
            tenant
            and TENANT_RE.fullmatch(tenant) is None
            or not self.keys.known(tenant)
        ):
            self.metrics.signature_errors.inc()
            return json_error(
                401, "unknown_tenant", detail=self.keys.unknown_tenant_detail(tenant)
            )
        if tenant and not self.keys.multi_tenant:
            # Only --sign-alg none lets a tenant header through without a tenants
            # directory; it names no keyring there, so it must not pick a rate bucket
            # (a fresh header per request would dodge the limit and grow the table)
            # nor a dedup namespace.
            tenant = ""
        if self.limiter.enabled:
            wait = self.limiter.check(tenant)
            if wait:
                self.metrics.rate_limited.inc()
                return json_error(429, "rate_limited", {"Retry-After": str(wait)})
        if not self.ready:
            return json_error(
                503, "unavailable", self._retry_after, detail=self.loading_reason
            )
        if self._reading >= self._max_reading:
            # Slow uploads hold a connection and a buffer each: cap how many bodies
            # may be arriving at once, so trickling clients cannot starve the rest.
            resp = json_error(503, "too_many_uploads", self._retry_after)
            resp.force_close()
            return resp
        return tenant
