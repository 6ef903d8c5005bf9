"""``flk bench``: open-loop load against a deployment, SLO verdicts, reports and
pictures, and the kernel microbenchmarks (docs/bench.md).

Modules: :mod:`.bodies` (signed PCS per request), :mod:`.http` (keep-alive HTTP/1.1
pool), :mod:`.load` (the open-loop engine), :mod:`.slo` (objectives and the SLO file),
:mod:`.report` (Markdown, JSON and pictures), :mod:`.kernels` (pytest-benchmark runs).
Heavy imports (matplotlib, pytest) happen only in the modules that need them.
"""
