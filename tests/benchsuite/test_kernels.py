"""``flk bench kernels``: pytest-benchmark runs with each kernel beside its baseline,
``--save`` and ``--compare`` (a regression beyond the threshold exits 1)."""

from __future__ import annotations

import json

import pytest

from flk_fast.benchsuite.kernels import compare
from flk_fast.cli import main
from flk_fast.errors import ConfigError

pytestmark = [pytest.mark.slow, pytest.mark.needs_ext]


def kernels(*args: str) -> int:
    """``flk bench kernels`` at a tiny size."""
    return main(["bench", "kernels", "--size", "0.01", *args])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("kernels") / "base.json"
    assert kernels("-k", "d_hat or merkle", "--save", str(path)) == 0
    return path


def test_each_kernel_is_beside_its_baseline(saved, capsys):
    doc = json.loads(saved.read_text())
    cases = {c["case"]: c for c in doc["cases"]}
    assert set(cases) == {"d_hat_batch", "merkle"}
    for c in cases.values():
        assert c["kernel_median_s"] > 0 and c["baseline_median_s"] > 0
        assert c["speedup"] == pytest.approx(
            c["baseline_median_s"] / c["kernel_median_s"]
        )
    assert cases["d_hat_batch"]["baseline"] == "Python loop over d_hat"
    assert doc["size"] == 0.01 and doc["machine"]


def test_compare_passes_on_itself_and_fails_on_a_faster_baseline(saved, tmp_path):
    doc = json.loads(saved.read_text())
    assert compare(doc, str(saved), 0.25) == []
    faster = dict(
        doc,
        cases=[dict(c, kernel_median_s=c["kernel_median_s"] / 2) for c in doc["cases"]],
    )
    fast_file = tmp_path / "fast.json"
    fast_file.write_text(json.dumps(faster))
    lines = compare(doc, str(fast_file), 0.25)
    assert len(lines) == 2 and "+100% > 25%" in lines[0]
    # Through the command: the run is slower than a baseline twice as fast -> exit 1.
    doubled = dict(
        faster,
        cases=[
            dict(c, kernel_median_s=c["kernel_median_s"] / 10) for c in faster["cases"]
        ],
    )
    fast_file.write_text(json.dumps(doubled))
    assert kernels("-k", "d_hat", "--compare", str(fast_file)) == 1


def test_compare_refuses_a_file_that_is_not_a_saved_run(saved, tmp_path):
    doc = json.loads(saved.read_text())
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ConfigError, match="not a file written by"):
        compare(doc, str(bad), 0.25)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(doc, size=1.0)))
    with pytest.raises(ConfigError, match="compare runs of the same size"):
        compare(doc, str(other), 0.25)
    with pytest.raises(ConfigError, match="No such file"):
        compare(doc, str(tmp_path / "none.json"), 0.25)


def test_every_case_agrees_with_its_baseline_and_a_wrong_pair_is_refused():
    # kernel_baselines builds the pairs of both `flk bench kernels` and
    # `python -m bench.bench_kernels`; each is checked before it is timed.
    from flk_fast.benchsuite import kernel_baselines as kb
    from flk_fast.benchsuite.kernel_cases import CASES

    for name, build in CASES.items():
        kernel, baseline, what = kb.checked(build(0.001), name)
        assert what and callable(kernel) and callable(baseline)
    kb.checked(kb.compressibility_pair(200), "compressibility")
    kb.checked(kb.box_counts_pair(300, obvious=True), "box_counts")
    with pytest.raises(AssertionError, match="wrong: kernel gave 1, baseline 2"):
        kb.checked((lambda: 1, lambda: 2, "two"), "wrong")
