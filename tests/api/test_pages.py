"""The pages for people (api/pages.py) in headless Chromium against a real ``serve`` process.

The job page follows a job that waits behind another one (one job at a time), so it is
in progress when the browser first sees it, then turns into the player; the player plays (its
``currentTime`` advances) and every rendition of the ladder is selected and shown (hls.js
``currentLevel``, and the decoded frames' height). Screenshots go under the test's tmp_path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from atproto_video.cli.tryupload import Throwaway
from tests.support.browser import check_page
from tests.support.media import cached, make_clip
from tests.support.service import ServiceProcess
from tests.support.waiting import wait_for

pytestmark = pytest.mark.browser

SERVICE_DID = "did:web:video.test"
UPLOAD = "app.bsky.video.uploadVideo"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(tmp_path_factory.mktemp("pages"),
                         {"VIDEO_PROCESSING_CONCURRENCY": "1"}).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pages-media")


def upload(svc: ServiceProcess, who: Throwaway, clip: Path) -> str:
    resp = httpx.post(f"{svc.url}/xrpc/{UPLOAD}", params={"did": who.did, "name": clip.name},
                      content=clip.read_bytes(), timeout=120,
                      headers={"authorization": f"Bearer {who.token(SERVICE_DID, UPLOAD)}",
                               "content-type": "video/mp4"})  # fmt: skip
    assert resp.status_code == 200, resp.text
    return str(resp.json()["jobId"])


def status(svc: ServiceProcess, job_id: str) -> dict[str, object]:
    resp = httpx.get(f"{svc.url}/xrpc/app.bsky.video.getJobStatus", params={"jobId": job_id})
    body: dict[str, object] = resp.json()["jobStatus"]
    return body


def test_the_job_page_follows_the_job_and_becomes_a_player_of_every_rendition(
    service: ServiceProcess, media: Path, tmp_path: Path
) -> None:
    # 720p source: a 720p and a 480p rendition. The blocker keeps the executor busy.
    blocker = cached(media, "blocker.mp4",
                     lambda p: make_clip(p, seconds=8, size="1280x720", extra=(
                         "-metadata", "title=blocker")))
    clip = cached(media, "watch.mp4", lambda p: make_clip(p, seconds=6, size="1280x720"))
    with Throwaway().serving() as who:
        first = upload(service, who, blocker)
        job_id = upload(service, who, clip)
        assert status(service, job_id)["state"] != "JOB_STATE_COMPLETED"
        seen = check_page(f"{service.url}/jobs/{job_id}", tmp_path)
    assert seen["status"] == 200 and seen["page"] == "job"
    assert seen["errors"] == [], seen["errors"]
    # In progress when first seen: a state a person can read, a progress bar, a screenshot.
    assert seen["firstState"] != "JOB_STATE_COMPLETED", seen
    assert seen["firstStateLabel"] in ("Queued", "Encoding", "Encoded"), seen
    assert seen["firstProgressShown"] is True
    in_progress = Path(seen["inProgressShot"])
    assert in_progress.parent == tmp_path and in_progress.stat().st_size > 0
    # Then the player, in place of the progress bar.
    assert seen["finalState"] == "JOB_STATE_COMPLETED" and seen["jobSectionHidden"] is True
    done = status(service, job_id)
    cid = done["blob"]["ref"]["$link"]  # type: ignore[index]
    base = f"{service.url}/watch/{quote(who.did, safe='')}/{cid}/"
    assert seen["poster"] == base + "thumbnail.jpg"
    assert seen["posterFetch"]["status"] == 200
    assert seen["posterFetch"]["type"] == "image/jpeg" and seen["posterFetch"]["bytes"] > 1000
    assert seen["hlsJs"] == (Path(__file__).parents[2] / "api/static/vendor/hls.version"
                             ).read_text().strip()  # the vendored copy, not a CDN's
    # The ladder, with sizes and bitrates, each selected and decoded at its own height.
    heights = [lv["height"] for lv in seen["levels"]]
    assert sorted(heights) == [480, 720], seen["levels"]
    assert all(lv["bitrate"] > 100_000 for lv in seen["levels"])
    for lv in seen["levels"]:
        assert any(f"{lv['width']}\u00d7{lv['height']}" in text and "b/s" in text
                   for text in seen["renditionList"]), seen["renditionList"]
    t1, t2 = seen["played"]
    assert t2 > t1 > 0
    assert [s["currentLevel"] for s in seen["switches"]] == list(range(len(heights)))
    assert [s["videoHeight"] for s in seen["switches"]] == heights
    assert [s["selected"] for s in seen["switches"]] == [str(i) for i in range(len(heights))]
    assert seen["playerError"] is None
    # The frame on screen is the test pattern (many colours), and the screenshot holds it.
    assert seen["frameColours"] > 50, seen["frameColours"]
    shot = Path(seen["playerShot"])
    assert shot.parent == tmp_path and shot.stat().st_size > 50_000
    # The blocker finished too (nothing left behind for other tests).
    wait_for(lambda: status(service, first)["state"] == "JOB_STATE_COMPLETED", timeout=300)


def test_the_watch_page_plays_a_completed_video(
    service: ServiceProcess, media: Path, tmp_path: Path
) -> None:
    clip = cached(media, "small.mp4", lambda p: make_clip(p, seconds=4, size="320x240"))
    with Throwaway().serving() as who:
        job_id = upload(service, who, clip)
        done = wait_for(lambda: (s := status(service, job_id))["state"] in (
            "JOB_STATE_COMPLETED", "JOB_STATE_FAILED") and s, timeout=300)
        assert done["state"] == "JOB_STATE_COMPLETED", done
        cid = done["blob"]["ref"]["$link"]  # type: ignore[index]
        page = f"{service.url}/watch/{quote(who.did, safe='')}/{cid}/"
        seen = check_page(page, tmp_path)
        # Without the slash: redirected to the page (its links are relative).
        bare = httpx.get(page.rstrip("/"))
        assert bare.status_code == 308 and bare.headers["location"] == page.removeprefix(
            service.url)
    assert seen["page"] == "watch" and seen["errors"] == []
    assert [lv["height"] for lv in seen["levels"]] == [240]
    assert seen["played"][1] > seen["played"][0] > 0
    assert seen["switches"][0]["videoHeight"] == 240


def test_the_job_page_of_a_refused_video_says_why(
    service: ServiceProcess, tmp_path: Path
) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"these are my holiday notes, not a video\n" * 200)
    with Throwaway().serving() as who:
        job_id = upload(service, who, junk)
        seen = check_page(f"{service.url}/jobs/{job_id}", tmp_path)
    assert seen["finalState"] == "JOB_STATE_FAILED", seen
    assert "(validation_failure)" in seen["message"]
    assert seen["errors"] == []


def test_pages_for_unknown_videos_and_jobs_are_404_html(service: ServiceProcess) -> None:
    for path in ("/watch/did%3Aplc%3Aabc/bafkreiaaaa/", "/jobs/nope"):
        resp = httpx.get(service.url + path)
        assert resp.status_code == 404 and resp.headers["content-type"].startswith("text/html")
        assert "not found" in resp.text


def test_pages_load_scripts_from_the_service_only(service: ServiceProcess) -> None:
    resp = httpx.get(f"{service.url}/jobs/nope")
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    assert '<script src="/static/vendor/hls.min.js">' in resp.text
    assert "http" not in resp.text.split("<body>")[1].split("</header>")[1]  # no CDN URL
    for asset in ("vendor/hls.min.js", "watch.js", "page.css"):
        got = httpx.get(f"{service.url}/static/{asset}")
        assert got.status_code == 200 and len(got.content) > 500, asset
