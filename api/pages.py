"""Pages for people: ``/watch/<did>/<cid>/`` plays a video, ``/jobs/<jobId>`` follows a job.

Plain HTML and JavaScript from ``api/static/``: the pages' own script (``watch.js``) and hls.js,
which ``scripts/install-web-assets.sh`` copies from the npm registry into ``static/vendor/`` at
build time, so nothing is fetched from a CDN at run time. The HTML carries only the DID, CID or
job ID (escaped); everything else the script reads from the service's public endpoints
(``getJobStatus``, the playlists), as any other player would. A content security policy allows
scripts from this service only.
"""

from __future__ import annotations

import asyncio
import html
from pathlib import Path
from urllib.parse import quote

from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from atproto_video.api.context import AppContext
from atproto_video.api.errors import NotFound

#: The real folder (a strict editable install links files; resolve() finds the repository's).
STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_URL = "/static"
HLS_JS = STATIC_DIR / "vendor" / "hls.min.js"

#: Scripts and styles from this service only; media, playlists and segments may come from a
#: store or CDN the playback redirects to; hls.js runs its transmuxer in a blob: worker.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src * data: blob:; "
       "media-src * blob:; connect-src *; worker-src 'self' blob:; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"content-security-policy": CSP, "cache-control": "no-cache",
           "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


def static_files() -> StaticFiles:
    """``/static/``: the pages' script, style and hls.js (check_dir off: a service built
    without the web assets still serves its API; the page says what is missing)."""
    return StaticFiles(directory=STATIC_DIR, check_dir=False)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    text = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="{STATIC_URL}/page.css">
<link rel="icon" href="data:,">
</head>
<body>
<header><a href="https://atproto.com/">atproto</a> video</header>
{body}
<script src="{STATIC_URL}/vendor/hls.min.js"></script>
<script src="{STATIC_URL}/watch.js"></script>
</body>
</html>
"""
    return HTMLResponse(text, status_code=status, headers=HEADERS)


def _missing_assets() -> str:
    if HLS_JS.is_file():
        return ""
    return ('<p class="error">This service was built without hls.js '
            "(run <code>make deps</code> or <code>scripts/install-web-assets.sh</code>).</p>")


def watch_url(did: str, cid: str) -> str:
    """The page's path; playlists and the thumbnail are relative to it."""
    return f"/watch/{quote(did, safe='')}/{quote(cid, safe='')}/"


async def watch_page(ctx: AppContext, did: str, cid: str) -> Response:
    job = await asyncio.to_thread(ctx.store.find_completed_by_cid, did, cid)
    if job is None:
        return _page("Video not found", '<main><h1>Video not found</h1><p class="error">No '
                     "processed video with this DID and CID on this service.</p></main>", 404)
    attrs = f'data-did="{html.escape(did)}" data-cid="{html.escape(cid)}"'
    return _page("Video", f"""<main id="app" data-page="watch" {attrs}>
<h1>Video</h1>
{_missing_assets()}
<p class="who">by <code>{html.escape(did)}</code></p>
<div id="player"></div>
</main>""")


def redirect_to_page(did: str, cid: str) -> Response:
    """``/watch/<did>/<cid>`` without the slash: the page's relative links need it."""
    return RedirectResponse(watch_url(did, cid), status_code=308)


async def job_page(ctx: AppContext, job_id: str) -> Response:
    try:
        await ctx.job_status(job_id)
    except NotFound:
        return _page("Job not found", '<main><h1>Job not found</h1><p class="error">No job '
                     "with this ID on this service.</p></main>", 404)
    return _page("Processing video", f"""<main id="app" data-page="job"
 data-job-id="{html.escape(job_id)}">
<h1>Processing video</h1>
{_missing_assets()}
<p class="who">job <code>{html.escape(job_id)}</code></p>
<section id="job">
<p><span id="state">…</span> <span id="percent"></span></p>
<progress id="progress" max="100"></progress>
<p id="message" class="error" hidden></p>
</section>
<div id="player"></div>
</main>""")
