"""schemathesis against /openapi.json of a live server: no input makes it answer 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from flk_fast.server.app import openapi_document

from .procs import ServerProcess

schema = schemathesis.openapi.from_dict(json.loads(openapi_document()))


@pytest.fixture(scope="module", params=["hmac", "none"])
def live_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    # With --sign-alg none, generated bodies that pass the shape check get past the
    # signature too, so verification and the dedup store are fuzzed as well.
    srv = ServerProcess(
        tmp_path_factory.mktemp("fuzz"), "fuzz", "--sign-alg", request.param
    )
    yield srv.url
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(
    case: schemathesis.Case, live_url: str, session: requests.Session
) -> None:
    case.call_and_validate(
        base_url=live_url, session=session, checks=[not_a_server_error], timeout=10
    )


def test_openapi_document_is_packaged() -> None:
    assert Path(__file__).exists() and openapi_document().startswith(b"{")
