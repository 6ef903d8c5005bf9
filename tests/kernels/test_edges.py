"""The edges of flk_fast.kernels as a tool author meets them: one Merkle default, one
way to refuse non-finite and non-integer input, errors that are both FlkError and the
stdlib type, and FLK_FAST_* values checked once with a message naming the variable."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from flk_fast.errors import ConfigError, FlkError, KernelInputError, KernelTypeError

SCHEMES = ("sha256-hexcat", "sha256-rfc6962", "blake3-rfc6962")


# --- Merkle: one default, proofs that know their scheme --------------------------


def test_defaults_agree_across_root_proof_verify(merkle_impl) -> None:  # type: ignore[no-untyped-def]
    from flk_fast.kernels import merkle_proof, merkle_root, merkle_verify

    data = os.urandom(64 * 6 + 7)
    proof = merkle_proof(data, 3)
    assert proof.scheme == "sha256-hexcat"
    assert merkle_verify(merkle_root(data), data[192:256], proof)


@pytest.mark.parametrize("root_scheme", SCHEMES)
@pytest.mark.parametrize("proof_scheme", SCHEMES)
def test_scheme_mismatch_names_both(merkle_impl, root_scheme, proof_scheme) -> None:  # type: ignore[no-untyped-def]
    from flk_fast.kernels import merkle_proof, merkle_root, merkle_verify

    data = os.urandom(300)
    root = merkle_root(data, scheme=root_scheme)
    proof = merkle_proof(data, 1, scheme=proof_scheme)
    if root_scheme == proof_scheme:
        assert merkle_verify(root, data[64:128], proof, scheme=root_scheme)
        return
    with pytest.raises(KernelInputError) as info:
        merkle_verify(root, data[64:128], proof, scheme=root_scheme)
    assert proof_scheme in str(info.value) and root_scheme in str(info.value)


def test_unknown_scheme_in_proof_or_call_is_an_error(merkle_impl) -> None:  # type: ignore[no-untyped-def]
    from flk_fast.kernels import MerkleProof, merkle_verify

    with pytest.raises(KernelInputError, match="unknown Merkle scheme 'md5'"):
        merkle_verify("00" * 32, b"x", MerkleProof("md5", 1, 0, 1, ()), scheme="md5")
    with pytest.raises(KernelInputError, match="md5 proof"):
        merkle_verify("00" * 32, b"x", MerkleProof("md5", 1, 0, 1, ()))


def test_merkle_type_errors_are_flk_and_type_errors(merkle_impl) -> None:  # type: ignore[no-untyped-def]
    from flk_fast.kernels import merkle_proof, merkle_root

    for bad in ("text", 42):
        with pytest.raises(KernelTypeError) as info:
            merkle_root(bad)  # type: ignore[arg-type]
        assert isinstance(info.value, TypeError | FlkError)
    with pytest.raises(KernelTypeError, match="leaf index must be an int"):
        merkle_proof(b"abc", 1.0, chunk_size=1)  # type: ignore[arg-type]


# --- non-finite and non-integer input, refused the same way everywhere -----------

NONFINITE = (math.nan, math.inf, -math.inf)


@pytest.mark.parametrize("bad", NONFINITE)
def test_d_hat_refuses_non_finite_counts_and_scales(bad: float) -> None:
    from flk_fast.kernels import d_hat

    with pytest.raises(KernelInputError, match=r"N_j must be finite; item 1 is"):
        d_hat([2, 4, 8, 16], [3, bad, 48, 190])
    with pytest.raises(KernelInputError, match=r"scales must be finite; item 2 is"):
        d_hat([2, 4, bad, 16], [3, 12, 48, 190])


def test_d_hat_refuses_non_integer_counts_and_accepts_integral_floats() -> None:
    from flk_fast.kernels import d_hat

    with pytest.raises(KernelInputError, match=r"N_j must be integers; item 1 is 12.7"):
        d_hat([2, 4, 8, 16], [3, 12.7, 48, 190])
    with pytest.raises(KernelInputError, match=r"N_j must be integers; item 0 is True"):
        d_hat([2, 4], [True, 4])
    with pytest.raises(KernelInputError, match=r"N_j must be integers; item 0 is '3'"):
        d_hat([2, 4], ["3", 4])  # type: ignore[list-item]
    ints = d_hat([2, 4, 8, 16], [3, 12, 48, 190])
    assert d_hat([2.0, 4, 8, 16], [3.0, 12.0, 48, 190]) == ints
    assert d_hat(np.array([2, 4, 8, 16]), np.array([3, 12, 48, 190])) == ints


@pytest.mark.needs_ext
def test_d_hat_batch_refuses_the_same_counts() -> None:
    from flk_fast.kernels import d_hat, d_hat_batch

    for bad, what in ((math.nan, "finite"), (12.7, "integers")):
        with pytest.raises(
            KernelInputError, match=rf"n_j must be {what}; row 0 column 1"
        ):
            d_hat_batch([2, 4, 8, 16], [[3, bad, 48, 190]])
    got = d_hat_batch([2, 4, 8, 16], np.array([[3.0, 12.0, 48.0, 190.0]]))
    assert got.tolist() == [d_hat([2, 4, 8, 16], [3, 12, 48, 190])]


@pytest.mark.parametrize("bad", NONFINITE)
def test_budget_and_regime_refuse_non_finite(bad: float) -> None:
    from flk_fast.kernels import budget, regime

    with pytest.raises(KernelInputError, match="d_hat must be finite"):
        budget(bad, 0.5, 0.3)
    with pytest.raises(KernelInputError, match="coh_star must be finite"):
        budget(2.0, bad, 0.3)
    with pytest.raises(KernelInputError, match="r must be finite"):
        budget(2.0, 0.5, bad)
    with pytest.raises(KernelInputError, match="d_hat must be finite"):
        regime(bad, 0.8)
    with pytest.raises(KernelInputError, match="coh_star must be finite"):
        regime(1.0, bad)
    with pytest.raises(KernelInputError, match="must be a finite number"):
        regime("1.0", 0.8)  # type: ignore[arg-type]


@pytest.mark.needs_ext
def test_array_kernels_word_non_finite_input_alike() -> None:
    from flk_fast.kernels import box_counts, coherence, theil_sen

    pts = [[0.1, 0.2], [0.3, math.nan]]
    for call in (lambda: box_counts(pts, [2]), lambda: coherence(pts)):
        with pytest.raises(
            KernelInputError, match="points must be finite; row 1 column 1 is nan"
        ):
            call()
    with pytest.raises(KernelInputError, match="y must be finite; item 2 is inf"):
        theil_sen([0, 1, 2], [0, 1, math.inf])
    with pytest.raises(
        KernelInputError, match="scales must be integers; item 0 is 2.5"
    ):
        box_counts([[0.1, 0.2]], [2.5])
    with pytest.raises(
        KernelInputError, match="n_directions, n_bins and seed must be integers"
    ):
        coherence([[0.1, 0.2]], n_directions=2.5)  # type: ignore[arg-type]


def test_every_kernel_error_is_flk_error_and_value_error() -> None:
    assert issubclass(KernelInputError, FlkError) and issubclass(
        KernelInputError, ValueError
    )
    assert issubclass(KernelTypeError, KernelInputError) and issubclass(
        KernelTypeError, TypeError
    )


@pytest.mark.needs_ext
def test_kernels_import_no_flk_fast_module_but_errors_and_env() -> None:
    code = (
        "import sys, flk_fast.kernels.signals, flk_fast.kernels.compress, "
        "flk_fast.kernels.merkle\n"
        "print(sorted(m for m in sys.modules if m.startswith('flk_fast') "
        "and not m.startswith('flk_fast.kernels')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert (
        out.strip()
        == "['flk_fast', 'flk_fast._env', 'flk_fast._lazy', 'flk_fast._version', "
        "'flk_fast.errors']"
    )


# --- compressibility's type message ----------------------------------------------


def test_compressibility_says_what_it_takes() -> None:
    from flk_fast.kernels import compressibility

    with pytest.raises(
        KernelTypeError,
        match=r"takes bytes or an iterable of bytes rows, not str; encode",
    ):
        compressibility("abc")  # type: ignore[arg-type]
    with pytest.raises(KernelTypeError, match="not int"):
        compressibility(5)  # type: ignore[arg-type]
    with pytest.raises(
        KernelTypeError, match=r"every row must be bytes-like, got str \(encode"
    ):
        compressibility([b"a", "b"])  # type: ignore[list-item]
    with pytest.raises(KernelTypeError, match="got int"):
        compressibility([b"a", 3])  # type: ignore[list-item]  # bytes(3) would be b"\0\0\0"


# --- empty coherence input: coh 0.0, v_star the first (unit) direction -----------


@pytest.mark.needs_ext
@pytest.mark.parametrize("d", [1, 3, 5])
def test_empty_coherence_gives_zero_and_first_unit_direction(d: int) -> None:
    from flk_fast.kernels import coherence
    from flk_fast.kernels.histogram import coherence_directions

    got = coherence(np.zeros((0, d)), n_directions=7, seed=9)
    assert got.coh_star == 0.0
    np.testing.assert_array_equal(got.v_star, coherence_directions(d, 7, 9)[0])
    assert math.isclose(float(np.linalg.norm(got.v_star)), 1.0)


# --- FLK_FAST_* validated once, naming the variable ------------------------------


def _import_with(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLK_FAST_")}
    return subprocess.run(
        [sys.executable, "-c", "import flk_fast.kernels._validate as v; v.threads(0)"],
        env={**clean, **env},
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"FLK_FAST_NUM_THREADS": "abc"},
            "FLK_FAST_NUM_THREADS='abc' is not a thread count; use an integer >= 0",
        ),
        (
            {"FLK_FAST_NUM_THREADS": "-3"},
            "FLK_FAST_NUM_THREADS='-3' is not a thread count",
        ),
        ({"FLK_FAST_NUM_THREADS": "2.5"}, "FLK_FAST_NUM_THREADS='2.5'"),
        (
            {"FLK_FAST_NO_EXTENSIONS": "maybe"},
            "FLK_FAST_NO_EXTENSIONS='maybe' is not a boolean; use one of 1, true, "
            "yes, on",
        ),
        ({"FLK_FAST_DEBUG": "sure"}, "FLK_FAST_DEBUG='sure' is not a boolean"),
        ({"FLK_FAST_OPENMP": "auto"}, "FLK_FAST_OPENMP='auto' is not a boolean"),
        (
            {"FLK_FAST_NUM_THREAD": "2"},
            "FLK_FAST_NUM_THREAD is not a flk_fast setting; known: "
            "FLK_FAST_NO_EXTENSIONS",
        ),
    ],
)
def test_bad_env_value_is_one_config_error_naming_it(env, message) -> None:  # type: ignore[no-untyped-def]
    out = _import_with(env)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("flk_fast.errors.ConfigError: ")
    assert message in last


def test_env_values_parse() -> None:
    from flk_fast import _env

    assert _env.read({}) == (False, 0)
    assert _env.read(
        {"FLK_FAST_NO_EXTENSIONS": " TRUE ", "FLK_FAST_NUM_THREADS": " 3 "}
    ) == (True, 3)
    assert _env.read({"FLK_FAST_NO_EXTENSIONS": "off", "FLK_FAST_NUM_THREADS": ""}) == (
        False,
        0,
    )
    with pytest.raises(ConfigError):
        _env.read({"FLK_FAST_NUM_THREADS": "0x10"})
    assert _env.read({"FLK_FAST_OPENMP": "0"}) == (False, 0)  # a known build switch


def test_setup_py_reads_build_switches_as_env_does() -> None:
    # setup.py cannot import flk_fast (not built yet), so it has its own _flag: it
    # must accept and refuse exactly what _env.parse_flag does (taken from setup.py's
    # source, without running the build).
    import ast
    from pathlib import Path

    from flk_fast import _env

    src = (Path(__file__).resolve().parents[2] / "setup.py").read_text()
    (node,) = [
        n
        for n in ast.parse(src).body
        if isinstance(n, ast.FunctionDef) and n.name == "_flag"
    ]
    ns: dict[str, object] = {"os": os}
    exec(compile(ast.Module([node], []), "setup.py", "exec"), ns)
    flag = ns["_flag"]
    for text in ["1", " TRUE ", "yes", "On", "0", "false", " no", "OFF", "", "  "]:
        os.environ["FLK_FAST_TEST_FLAG"] = text
        try:
            assert flag("FLK_FAST_TEST_FLAG") is _env.parse_flag("X", text), text
        finally:
            del os.environ["FLK_FAST_TEST_FLAG"]
    for text in ["maybe", "2", "enabled"]:
        os.environ["FLK_FAST_TEST_FLAG"] = text
        try:
            with pytest.raises(ConfigError):
                _env.parse_flag("X", text)
            with pytest.raises(SystemExit, match="is not a boolean"):
                flag("FLK_FAST_TEST_FLAG")
        finally:
            del os.environ["FLK_FAST_TEST_FLAG"]
    assert flag("FLK_FAST_TEST_UNSET", default=True) is True  # unset: the default


def test_cli_reports_bad_env_in_one_line() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLK_FAST_")}
    out = subprocess.run(
        [sys.executable, "-m", "flk_fast", "--version"],
        env={**clean, "FLK_FAST_NUM_THREADS": "abc"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "flk: error: FLK_FAST_NUM_THREADS='abc' is not a thread count; use an "
        "integer >= 0 (0 = one thread per core)"
    ]
