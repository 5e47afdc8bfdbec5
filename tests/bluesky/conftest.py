"""A real PDS + PLC on loopback and the service pointed at that PLC, for the Bluesky flow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pds import LocalPDS
from tests.support.service import ServiceProcess


def bluesky_service(data_dir: Path, pds: LocalPDS, **env: str) -> ServiceProcess:
    return ServiceProcess(
        data_dir,
        {
            "VIDEO_DID_PLC_URL": pds.plc_url,
            "VIDEO_ALLOW_PRIVATE_ENDPOINTS": "1",  # the local PDS is http://localhost
            "VIDEO_PROCESSING_CONCURRENCY": "2",
            "VIDEO_PDS_RETRY_MAX_S": "1",  # outage tests: retry every second at most
            "VIDEO_LOG_LEVEL": "debug",  # so the no-token-in-logs check sees everything
            **env,
        },
    ).start()


@pytest.fixture(scope="session")
def pds() -> Iterator[LocalPDS]:
    with LocalPDS(extra_accounts={"bob.test": "bob-pass"}) as net:
        yield net


@pytest.fixture(scope="session")
def service(pds: LocalPDS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = bluesky_service(tmp_path_factory.mktemp("bsky-service"), pds)
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bsky-media")


@pytest.fixture(scope="session")
def issued_tokens() -> list[str]:
    """Every upload token handed to the service, to check none of them reached its log."""
    return []
