"""Schema-driven fuzzing (schemathesis) of a real ``atproto-video serve`` from its own
``/openapi.json``: valid and invalid parameters and bodies, with a valid token for the method
(so validation past the token is reached) and without one. No answer is a 500, every answer
matches its documented status and schema, invalid data is refused, and every error is an XRPC
error body. Bounded: a few dozen examples per method, well under two minutes in all."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from atproto_video.api.models import METHODS
from tests.support.didserver import DidServer
from tests.support.identity import Identity
from tests.support.service import ServiceProcess
from tests.support.xrpc import SERVICE_DID, user

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, dids: DidServer) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(
        tmp_path_factory.mktemp("fuzz"),
        {"VIDEO_DID_PLC_URL": dids.url, "VIDEO_MAX_UPLOAD_BYTES": "1000000"},
    ).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def fuzzer(dids: DidServer) -> Identity:
    return user(dids)


# uploadVideo declares the lexicon's encoding, video/mp4: generated bodies are raw bytes.
schemathesis.serializer.alias("video/mp4", "application/octet-stream")

#: Examples per method and generation mode (valid data, invalid data).
EXAMPLES = 50


@pytest.fixture(scope="module")
def operations(fuzzed: ServiceProcess) -> dict[str, Any]:
    """The operations of the running service's published schema, by NSID."""
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    results = list(schema.get_all_operations())
    bad = [r for r in results if not isinstance(r, Ok)]
    assert not bad, bad  # every operation of the schema is usable
    return {r.ok().path.rsplit("/", 1)[1]: r.ok() for r in results if isinstance(r, Ok)}


def test_the_schema_lists_every_method(operations: dict[str, Any]) -> None:
    assert set(operations) == set(METHODS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("nsid", sorted(METHODS))
def test_fuzz(operations: dict[str, Any], fuzzer: Identity, nsid: str,
              mode: GenerationMode) -> None:
    """With a valid token for the method (validation past the token) and without one."""

    @given(case=operations[nsid].as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def fuzz(case: Any) -> None:
        signed = {"authorization": f"Bearer {fuzzer.token(SERVICE_DID, nsid)}"}
        for headers in (signed, {}):
            response = case.call(headers=headers, timeout=30)
            case.validate_response(response, checks=CHECKS, headers=headers)
            assert response.status_code < 500, response.text
            if response.status_code >= 400:
                assert_xrpc_error(response.json())

    fuzz()


def assert_xrpc_error(body: Any) -> None:
    assert isinstance(body, dict) and set(body) == {"error", "message"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["message"], str), body
