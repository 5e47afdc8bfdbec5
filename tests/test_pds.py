"""The uploadBlob client against scripted PDSs on loopback: retries, final errors, SSRF rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from atproto_video.core.blob import blob_for_file
from atproto_video.core.lexicon import FailureCode
from atproto_video.core.netguard import UnsafeEndpoint
from atproto_video.core.pds import (
    PdsBlobTooLarge,
    PdsUploadError,
    RetryPolicy,
    resolve_target,
    upload_blob,
)
from tests.bluesky.scripted import Answer, ScriptedPDS
from tests.support.waiting import free_port

pytestmark = pytest.mark.anyio
TOKEN = "header.payload-with-secret.signature"
FAST = RetryPolicy(timeout_s=5, initial_s=0.01, max_s=0.05, min_remaining_s=0.5)


@pytest.fixture
def script() -> Iterator[list[ScriptedPDS]]:
    made: list[ScriptedPDS] = []
    yield made
    for s in made:
        s.stop()


def pds(script: list[ScriptedPDS], *answers: Answer) -> ScriptedPDS:
    s = ScriptedPDS(list(answers))
    script.append(s)
    return s


@pytest.fixture
def mp4(tmp_path: Path) -> Path:
    path = tmp_path / "video.mp4"
    path.write_bytes(bytes(range(256)) * 5000)  # 1.28 MB: several chunks
    return path


class FakeTime:
    """A clock that only moves when the client sleeps: retry schedules without waiting."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def ok_answer(path: Path) -> Answer:
    return Answer(200, {"blob": blob_for_file(path)})


async def test_streams_the_file_and_returns_the_pds_blob(
    script: list[ScriptedPDS], mp4: Path
) -> None:
    blob = {**blob_for_file(mp4), "extra": "kept as the PDS said"}
    server = pds(script, Answer(200, {"blob": blob}))
    progress: list[tuple[int, int]] = []

    async def on_progress(sent: int, total: int) -> None:
        progress.append((sent, total))

    got = await upload_blob(
        server.url, TOKEN, mp4, deadline=2e9, allow_private=True, on_progress=on_progress
    )
    assert got == blob
    [req] = server.seen
    assert req.path == "/xrpc/com.atproto.repo.uploadBlob"
    assert req.body == mp4.read_bytes()
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.headers["content-type"] == "video/mp4"
    assert req.headers["content-length"] == str(mp4.stat().st_size)
    size = mp4.stat().st_size
    assert progress[-1] == (size, size) and len(progress) == 2  # 1 MiB chunks
    assert [p for p, _ in progress] == sorted(p for p, _ in progress)


async def test_transient_failures_are_retried_with_backoff(
    script: list[ScriptedPDS], mp4: Path
) -> None:
    server = pds(
        script,
        Answer(503, {"error": "ServiceUnavailable"}),
        Answer(502, b"<html>bad gateway</html>"),
        Answer(429, {"error": "RateLimitExceeded"}, {"retry-after": "7"}),
        ok_answer(mp4),
    )
    t = FakeTime()
    retries: list[str] = []
    policy = RetryPolicy(initial_s=1, max_s=30)
    got = await upload_blob(
        server.url,
        TOKEN,
        mp4,
        deadline=t.now + 1800,
        allow_private=True,
        policy=policy,
        clock=t.clock,
        sleep=t.sleep,
        on_retry=lambda reason, _d: retries.append(reason),
    )
    assert got["ref"] == blob_for_file(mp4)["ref"]
    assert len(server.seen) == 4
    assert t.sleeps == [1, 2, 7]  # exponential, and Retry-After honoured
    assert retries == ["HTTP 503 ServiceUnavailable", "HTTP 502", "HTTP 429 RateLimitExceeded"]
    assert all(s.body == mp4.read_bytes() for s in server.seen)  # whole file every time


async def test_unreachable_until_the_token_expires(mp4: Path) -> None:
    t = FakeTime()
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    with pytest.raises(PdsUploadError) as info:
        await upload_blob(
            url,
            TOKEN,
            mp4,
            deadline=t.now + 120,
            allow_private=True,
            policy=RetryPolicy(initial_s=1, max_s=30),
            clock=t.clock,
            sleep=t.sleep,
        )
    err = info.value
    assert err.failure_code == FailureCode.PDS_UPLOAD
    assert "expired before the PDS accepted the video" in err.message
    assert "ConnectError" in err.message and TOKEN not in str(err)
    assert t.sleeps[:5] == [1, 2, 4, 8, 16]
    assert max(t.sleeps) <= 30 and t.now <= 1_000_000 + 120


async def test_expired_token_means_no_request(script: list[ScriptedPDS], mp4: Path) -> None:
    server = pds(script, ok_answer(mp4))
    t = FakeTime()
    with pytest.raises(PdsUploadError, match="expired before the video was ready"):
        await upload_blob(
            server.url, TOKEN, mp4, deadline=t.now - 5, allow_private=True, clock=t.clock
        )
    assert server.seen == []


@pytest.mark.parametrize(
    ("answer", "cls", "text"),
    [
        (
            Answer(413, {"error": "PayloadTooLarge", "message": "request entity too large"}),
            PdsBlobTooLarge,
            "too large",
        ),
        (
            Answer(401, {"error": "JwtExpired", "message": "jwt expired"}),
            PdsUploadError,
            "HTTP 401 JwtExpired: jwt expired",
        ),
        (Answer(400, {"error": "InvalidRequest"}), PdsUploadError, "HTTP 400 InvalidRequest"),
        (Answer(200, {"nope": 1}), PdsUploadError, "without a blob ref"),
        (Answer(200, b"not json"), PdsUploadError, "invalid JSON"),
        (Answer(200, b" " * 100_000), PdsUploadError, "oversized"),
    ],
)
async def test_final_failures_are_not_retried(
    script: list[ScriptedPDS], mp4: Path, answer: Answer, cls: type[PdsUploadError], text: str
) -> None:
    server = pds(script, answer, ok_answer(mp4))
    with pytest.raises(cls, match=text) as info:
        await upload_blob(server.url, TOKEN, mp4, deadline=2e9, allow_private=True, policy=FAST)
    assert len(server.seen) == 1
    assert TOKEN not in str(info.value)
    expected = FailureCode.PDS_UPLOAD_SIZE if cls is PdsBlobTooLarge else FailureCode.PDS_UPLOAD
    assert info.value.failure_code == expected


async def test_redirects_are_not_followed(script: list[ScriptedPDS], mp4: Path) -> None:
    elsewhere = pds(script, ok_answer(mp4))
    server = pds(script, Answer(307, {}, {"location": f"{elsewhere.url}/xrpc/x"}))
    with pytest.raises(PdsUploadError, match="redirect"):
        await upload_blob(server.url, TOKEN, mp4, deadline=2e9, allow_private=True, policy=FAST)
    assert elsewhere.seen == []  # the token never went to the redirect target


async def test_a_hanging_pds_times_out_and_is_retried(script: list[ScriptedPDS], mp4: Path) -> None:
    server = pds(script, Answer(0, hang=True), ok_answer(mp4))
    policy = RetryPolicy(timeout_s=1, initial_s=0.01, max_s=0.05, min_remaining_s=0.5)
    got = await upload_blob(server.url, TOKEN, mp4, deadline=2e9, allow_private=True, policy=policy)
    assert got["ref"] == blob_for_file(mp4)["ref"] and len(server.seen) == 2


# --------------------------------------------------------------------------- SSRF
def resolver(*addrs: str) -> Any:
    async def resolve(_host: str, _port: int) -> list[str]:
        return list(addrs)

    return resolve


@pytest.mark.parametrize(
    "addr",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.10",
        "169.254.169.254",
        "::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
    ],
)
async def test_private_addresses_are_refused(addr: str) -> None:
    with pytest.raises(UnsafeEndpoint, match="non-public"):
        await resolve_target("https://pds.example.com", allow_private=False, resolve=resolver(addr))
    # one bad address among good ones is enough to refuse (the client could pick it)
    with pytest.raises(UnsafeEndpoint):
        await resolve_target(
            "https://pds.example.com", allow_private=False, resolve=resolver("93.184.216.34", addr)
        )


@pytest.mark.parametrize(
    "url", ["http://pds.example.com", "ftp://pds.example.com", "https://user:pw@pds.example.com"]
)
async def test_non_https_and_credentials_are_refused(url: str) -> None:
    with pytest.raises(UnsafeEndpoint):
        await resolve_target(url, allow_private=False, resolve=resolver("93.184.216.34"))


async def test_refused_endpoint_fails_the_upload_without_a_request(mp4: Path) -> None:
    with pytest.raises(PdsUploadError, match="refusing to upload to the PDS") as info:
        await upload_blob(
            "https://pds.example.com", TOKEN, mp4, deadline=2e9, resolve=resolver("10.0.0.7")
        )
    assert info.value.failure_code == FailureCode.PDS_UPLOAD


async def test_request_is_pinned_to_the_checked_address(mp4: Path) -> None:
    """No second DNS lookup: the IP that passed the check is the one connected to."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        request.read()
        return httpx.Response(200, json={"blob": blob_for_file(mp4)})

    for url, addr, expect_url, host in [
        ("https://pds.example.com", "93.184.216.34", "https://93.184.216.34", "pds.example.com"),
        (
            "https://pds.example.com:8443/",
            "2606:2800:220:1::1",
            "https://[2606:2800:220:1::1]:8443",
            "pds.example.com:8443",
        ),
    ]:
        await upload_blob(
            url,
            TOKEN,
            mp4,
            deadline=2e9,
            resolve=resolver(addr),
            transport=httpx.MockTransport(handle),
        )
        req = seen[-1]
        assert str(req.url) == f"{expect_url}/xrpc/com.atproto.repo.uploadBlob"
        assert req.headers["host"] == host
        assert req.extensions["sni_hostname"] == "pds.example.com"  # TLS checks the name


async def test_dns_failure_is_transient(mp4: Path) -> None:
    calls: list[str] = []

    async def flaky(host: str, _port: int) -> list[str]:
        calls.append(host)
        if len(calls) < 3:
            raise OSError("temporary failure in name resolution")
        return ["93.184.216.34"]

    t = FakeTime()
    got = await upload_blob(
        "https://pds.example.com",
        TOKEN,
        mp4,
        deadline=t.now + 600,
        resolve=flaky,
        clock=t.clock,
        sleep=t.sleep,
        transport=httpx.MockTransport(
            lambda r: httpx.Response(200, json={"blob": blob_for_file(mp4)})
        ),
    )
    assert got["size"] == mp4.stat().st_size and len(calls) == 3 and len(t.sleeps) == 2
