# cython: language_level=3
"""The compiled judge: (tenant, body) -> Verdict in one call (SPEC §7 steps 2-5).

It gives the verdict of ``server.judge.PythonJudge`` byte for byte. A well-formed body
(msgspec checks its shape in C) is judged here: canonical payloads, HMAC / Ed25519
through the C-implemented ``hmac`` / ``cryptography`` calls, the §6 engine (D̂
Theil-Sen, budget, regime, bounds) on C doubles, the answer JSON, dedup key and content
digest. Anything unusual (a shape error, a string that needs JSON escaping, a
non-finite number) goes to the Python oracle, so those answers are equal by
construction. ``compiled_calls`` / ``oracle_calls`` count which path each call took.
"""

from cpython.mem cimport PyMem_Free
from libc.math cimport fabs, isfinite, log2


cdef extern from "Python.h":
    # CPython's correctly rounded dtoa/strtod: what round() and float.__repr__ use.
    char* PyOS_double_to_string(double val, char format_code, int precision,
                                int flags, int* type) except NULL
    double PyOS_string_to_double(const char* s, char** endptr,
                                 object overflow_exception) except? -1.0
    int Py_DTSF_ADD_DOT_0
from libc.stdlib cimport qsort

import binascii
import hashlib
import hmac
from datetime import datetime

import typing
from typing import Annotated

import msgspec

from flk_fast.errors import SignatureError
from flk_fast.protocol.pcs import PCS
from flk_fast.protocol.signing import LEGACY_VERSION, Ed25519Key, HmacKey
from flk_fast.protocol.verify import VerifyResult



def _lax_pcs():
    """PCS without its regex patterns (Python ``re``: most of msgspec's decoding
    time); ``_patterns_hold`` checks them in C, and a body failing one goes to the
    oracle. Every other constraint is msgspec's, unchanged."""
    hints = typing.get_type_hints(PCS, include_extras=True)
    n_j_meta = hints["N_j"].__metadata__
    hints.update(
        pcs_id=str,
        merkle_root=str,
        sent_at=str,
        N_j=Annotated[(dict[str, hints["seed"]], *n_j_meta)],
    )
    return msgspec.defstruct("LaxPCS", list(hints.items()), frozen=True)


cdef object _DECODER = msgspec.json.Decoder(_lax_pcs())
cdef object _ENC = msgspec.json.Encoder()
cdef tuple _DECODE_ERRORS = (
    msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeDecodeError
)
cdef object _sha256 = hashlib.sha256
cdef object _a2b = binascii.a2b_base64
cdef object _compare = hmac.compare_digest
cdef object _fromiso = datetime.fromisoformat
cdef object _HmacKey = HmacKey
cdef object _Ed25519Key = Ed25519Key
cdef object _SignatureError = SignatureError
cdef object _VerifyResult = VerifyResult
cdef str _LEGACY = LEGACY_VERSION

cdef int _MAX_SCALES = 64  # LIMITS["scales"]; msgspec enforces it before we get here
cdef double _MIN_DX = 1e-9  # kernels.signals._MIN_DX (SPEC §4.2)


cdef int _cmp_double(const void* a, const void* b) noexcept nogil:
    cdef double x = (<const double*>a)[0]
    cdef double y = (<const double*>b)[0]
    return (x > y) - (x < y)


cdef inline bint _digit(Py_UCS4 c):
    return c >= u"0" and c <= u"9"


cdef bint _hex64(str s):
    # pcs.Hex64: ^[0-9a-f]{64}\Z
    if len(s) != 64:
        return False
    cdef Py_UCS4 c
    for c in s:
        if not (_digit(c) or (c >= u"a" and c <= u"f")):
            return False
    return True


cdef bint _decimal_key(str s):
    # pcs.DecimalKey: ^(0|[1-9][0-9]{0,18})\Z
    cdef Py_ssize_t n = len(s)
    if n == 0 or n > 19 or (n > 1 and s[0] == u"0"):
        return False
    cdef Py_UCS4 c
    for c in s:
        if not _digit(c):
            return False
    return True


cdef bint _sent_at(str s):
    # pcs.SentAt with ASCII digits: YYYY-MM-DDTHH:MM:SS(.f{1,9})?(Z|+00:00). A
    # non-ASCII digit (which Python's \d admits) fails here and goes to the oracle.
    cdef Py_ssize_t n = len(s), i, end
    if n < 20:
        return False
    for i in range(19):
        if i in (4, 7):
            if s[i] != u"-":
                return False
        elif i == 10:
            if s[i] != u"T":
                return False
        elif i in (13, 16):
            if s[i] != u":":
                return False
        elif not _digit(s[i]):
            return False
    i = 19
    if s[i] == u".":
        i += 1
        end = i
        while end < n and _digit(s[end]):
            end += 1
        if end == i or end - i > 9:
            return False
        i = end
    tail = s[i:]
    return tail == "Z" or tail == "+00:00"


cdef bint _patterns_hold(pcs):
    if not (_hex64(pcs.pcs_id) and _hex64(pcs.merkle_root) and _sent_at(pcs.sent_at)):
        return False
    for k in pcs.N_j:
        if not _decimal_key(k):
            return False
    return True


cdef inline bint _plain(str s):
    # signing._json_str writes such a string as-is; any other goes to the oracle.
    return s.isascii() and s.isprintable() and '"' not in s and "\\" not in s


cdef double _round9(double x) except? -1.0:
    # round(x, 9) for a finite x: CPython rounds through the 9-digit "%.9f" digits
    # of dtoa mode 3 and reads them back with strtod, exactly as done here.
    cdef char* text = PyOS_double_to_string(x, b"f", 9, 0, NULL)
    try:
        return PyOS_string_to_double(text, NULL, None)
    finally:
        PyMem_Free(text)


cdef str _num(double x):
    # signing._num: float.__repr__(round(x, 9)), without the Python calls.
    cdef char* text = PyOS_double_to_string(_round9(x), b"r", 0, Py_DTSF_ADD_DOT_0, NULL)
    try:
        return text.decode("ascii")
    finally:
        PyMem_Free(text)


cdef class CompiledJudge:
    cdef readonly object oracle
    cdef object keys, verdict, refused_v01, dedup_key
    cdef bint refuse_v01
    cdef double tol_d, tol_coh_hi, tol_budget
    cdef double b_base, b_alpha, b_beta, b_gamma, b_d0
    cdef double r_sticky_coh, r_sticky_d, r_non_sticky_d
    cdef str tol_d_repr, tol_coh_repr, tol_budget_repr
    cdef public unsigned long long compiled_calls, oracle_calls
    cdef readonly bint compiled

    def __init__(self, oracle):
        from flk_fast.server import judge as pyjudge

        self.oracle = oracle
        self.compiled = True
        self.keys = oracle.keys
        self.refuse_v01 = oracle.refuse_v01
        self.verdict = pyjudge.Verdict
        self.refused_v01 = pyjudge._REFUSED_V01
        p = oracle.params
        self.tol_d, self.tol_budget = p.tol_d, p.tol_budget
        self.tol_coh_hi = 1.0 + p.tol_coh
        self.tol_d_repr, self.tol_budget_repr = repr(p.tol_d), repr(p.tol_budget)
        self.tol_coh_repr = repr(1.0 + p.tol_coh)
        b, g = p.budget, p.regime
        self.b_base, self.b_alpha, self.b_beta = b.base, b.alpha, b.beta
        self.b_gamma, self.b_d0 = b.gamma, b.d0
        self.r_sticky_coh, self.r_sticky_d = g.sticky_coh, g.sticky_d
        self.r_non_sticky_d = g.non_sticky_d

    def __call__(self, str tenant, body):
        cdef object v = self._judge(tenant, body)
        if v is None:
            self.oracle_calls += 1
            return self.oracle(tenant, body)
        self.compiled_calls += 1
        return v

    cdef object _judge(self, str tenant, body):
        """The verdict, or None for a body the oracle must judge."""
        try:
            pcs = _DECODER.decode(body)
        except _DECODE_ERRORS:
            return None
        if not _patterns_hold(pcs):
            return None
        cdef tuple scales = pcs.scales
        cdef str version = pcs.version, shard_id = pcs.shard_id
        cdef double coh = pcs.coh_star, dh = pcs.D_hat, r = pcs.r, bud = pcs.budget
        if len(set(scales)) != len(scales):
            return None
        try:
            _fromiso(pcs.sent_at)
        except ValueError:
            return None
        if not (_plain(version) and _plain(shard_id)):
            return None
        if not (isfinite(coh) and isfinite(dh) and isfinite(r) and isfinite(bud)):
            return None
        cdef double v
        for v in pcs.v_star:
            if not isfinite(v):
                return None

        cdef bint legacy = version == _LEGACY
        if legacy and self.refuse_v01:
            return self.verdict(401, self.refused_v01)
        cdef str n_j = ",".join([f'"{k}":{c}' for k, c in sorted(pcs.N_j.items())])
        cdef str d_s = _num(dh), b_s = _num(bud), c_s = _num(coh), r_s = _num(r)
        cdef str pcs_id = pcs.pcs_id, root = pcs.merkle_root
        cdef bytes full = (
            f'{{"D_hat":{d_s},"N_j":{{{n_j}}},"budget":{b_s},'
            f'"coh_star":{c_s},"epoch":{pcs.epoch},'
            f'"merkle_root":"{root}","pcs_id":"{pcs_id}",'
            f'"r":{r_s},"regime":"{pcs.regime}","scales":[{",".join([str(s) for s in scales])}],'
            f'"schema":"{pcs.schema}","seed":{pcs.seed},'
            f'"shard_id":"{shard_id}","v_star":[{",".join([_num(x) for x in pcs.v_star])}],'
            f'"version":"{version}"}}'
        ).encode("ascii")
        ring = self.keys.keyring_for(tenant)
        if ring is not None:
            signed = (
                f'{{"D_hat":{d_s},"budget":{b_s},"coh_star":{c_s},"epoch":{pcs.epoch},'
                f'"merkle_root":"{root}","pcs_id":"{pcs_id}",'
                f'"r":{r_s},"shard_id":"{shard_id}"}}'
            ).encode("ascii") if legacy else full
            if not _signed_by(ring, pcs.sig, signed):
                # No key matched on the quick way: the keyring itself names the error.
                try:
                    ring.verify(pcs, signed)
                except _SignatureError as exc:
                    return self.verdict(
                        401, _ENC.encode({"error": "signature", "detail": str(exc)})
                    )
        result = self._verify(pcs, scales, dh, coh, r, bud)
        status = 200 if result.accepted and not result.escalated else 202
        # tuple.__new__: a NamedTuple's own __new__ is Python code.
        return tuple.__new__(self.verdict, (
            status,
            _ENC.encode(result),
            f"{tenant}\0{pcs_id}" if tenant else pcs_id,
            result,
            _sha256(full).digest(),
        ))

    cdef object _verify(self, pcs, tuple scales, double dh, double coh, double r,
                        double bud):
        """SPEC §6, rule for rule as ``protocol.verify.verify_pcs``."""
        cdef double value = (
            self.b_base + self.b_alpha * (1.0 - r)
            + self.b_beta * (dh - self.b_d0 if dh - self.b_d0 > 0.0 else 0.0)
            + self.b_gamma * coh
        )
        value = value if value > 0.0 else 0.0  # Python's max(0.0, value)
        value = value if value < 1.0 else 1.0  # and min(1.0, .)
        claimed_budget = _round9(value)
        recomputed, d_error = _d_hat(scales, pcs.N_j)
        pcs_id = pcs.pcs_id
        expected = _sha256(
            f"{pcs.merkle_root}|{pcs.epoch}|{pcs.shard_id}".encode()
        ).hexdigest()
        if pcs_id != expected:
            return self._result(pcs_id, False, recomputed, claimed_budget,
                                "pcs_id: does not match sha256(merkle_root|epoch|shard_id)")
        if recomputed is None:
            return self._result(pcs_id, False, None, claimed_budget,
                                f"D_hat: cannot be recomputed: {d_error}")
        if fabs(dh - <double>recomputed) > self.tol_d:
            return self._result(
                pcs_id, False, recomputed, claimed_budget,
                f"D_hat: claimed {pcs.D_hat!r} differs from recomputed {recomputed!r} "
                f"by more than {self.tol_d_repr}",
            )
        if not (0.0 <= coh <= self.tol_coh_hi):
            return self._result(pcs_id, False, recomputed, claimed_budget,
                                f"coh_star: {pcs.coh_star!r} outside [0, {self.tol_coh_repr}]")
        if not (0.0 <= r <= 1.0):
            return self._result(pcs_id, False, recomputed, claimed_budget,
                                f"r: {pcs.r!r} outside [0, 1]")
        reasons = []
        if coh >= self.r_sticky_coh and dh <= self.r_sticky_d:
            expected_regime = "sticky"
        elif dh >= self.r_non_sticky_d:
            expected_regime = "non_sticky"
        else:
            expected_regime = "mixed"
        if pcs.regime != expected_regime:
            reasons.append(f"regime: claimed {pcs.regime}, expected {expected_regime}")
        if fabs(bud - <double>claimed_budget) > self.tol_budget:
            reasons.append(
                f"budget: claimed {pcs.budget!r}, expected {claimed_budget!r} "
                f"(tolerance {self.tol_budget_repr})"
            )
        return self._result(pcs_id, True, recomputed, claimed_budget, "; ".join(reasons))

    cdef object _result(self, str pcs_id, bint accepted, recomputed, claimed_budget,
                        str reason):
        return _VerifyResult(pcs_id, accepted, bool(reason), recomputed,
                             claimed_budget, reason)


cdef bint _signed_by(ring, sig, bytes payload):
    """True when a key of ``ring`` matches ``sig``; False sends the caller to
    ``Keyring.verify`` for the exact error (or an unusual key type)."""
    if not sig:
        return False
    try:
        raw = _a2b(sig, strict_mode=True)
    except (binascii.Error, ValueError):
        return False
    cdef Py_ssize_t n = len(raw)
    for _, key in ring._keys:
        kind = type(key)
        if kind is _HmacKey and n == 32:
            # The OpenSSL state under hmac.HMAC: its copy() is C, the wrapper's is not.
            keyed = key._keyed
            h = getattr(keyed, "_hmac", None) or keyed
            h = h.copy()
            h.update(payload)
            if _compare(h.digest(), raw):
                return True
        elif kind is _Ed25519Key and n == 64:
            if key.matches(payload, raw):
                return True
    return False


cdef tuple _d_hat(tuple scales, dict n_j):
    """(D̂, "") or (None, why), as ``verify_pcs`` gets them from ``signals.d_hat``."""
    cdef Py_ssize_t k = len(scales), i, j, m = 0
    cdef double xs[64]
    cdef double ys[64]
    cdef double slopes[2016]  # 64 * 63 / 2 pairs
    cdef double dx
    cdef long long count
    counts = []
    for s in scales:
        c = n_j.get(str(s))
        if c is None:
            return None, f"N_j: no entry for scale {s}"
        counts.append(c)
    if k < 2:
        return None, f"D_hat needs at least 2 scales, got {k}"
    if k > _MAX_SCALES:
        raise ValueError(f"more than {_MAX_SCALES} scales")  # msgspec forbids it
    for i in range(k):
        s, c = scales[i], counts[i]
        count = c
        if count <= 0:
            return None, f"D_hat: N_j for scale {s} must be > 0, got {c}"
        xs[i] = log2(<double>(<long long>s))
        ys[i] = log2(<double>count)
    for i in range(k):
        for j in range(i + 1, k):
            dx = xs[j] - xs[i]
            if fabs(dx) >= _MIN_DX:
                slopes[m] = (ys[j] - ys[i]) / dx
                m += 1
    if m == 0:
        return None, "D_hat: no two scales differ"
    qsort(slopes, m, sizeof(double), _cmp_double)
    return _round9(slopes[m // 2]), ""
