"""``/watch/<did>/<cid>/<path>``: the outputs of a completed job, for players; with the job id
in place of the CID, the outputs of a job so far (playable before it completes).

A backend answers with a local file (sent with Range support), bytes (playlists), an object
to stream (S3 in proxy mode, Range passed through to the store) or a URL to redirect to (S3
presigned or CDN URLs).
"""

from __future__ import annotations

import re

from starlette.concurrency import iterate_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from atproto_video.core.storage import Playback, RemoteObject, content_type

#: Outputs never change once a job completes (a new upload is a new CID).
CACHE = {"cache-control": "public, max-age=31536000, immutable"}
#: Outputs by job id: the master playlist is rewritten as renditions complete.
NO_CACHE = {"cache-control": "no-cache"}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def respond(request: Request, found: Playback, name: str) -> Response:
    if found.url is not None:
        return RedirectResponse(found.url, status_code=307)
    ctype = found.content_type or content_type(name)
    cache = NO_CACHE if found.changing else CACHE
    if found.data is not None:
        return Response(found.data if request.method != "HEAD" else b"", media_type=ctype,
                        headers={**cache, "content-length": str(len(found.data))})
    if found.remote is not None:
        return _stream(request, found.remote, cache)
    assert found.file is not None
    return FileResponse(found.file, media_type=ctype, headers=cache)


class RangeNotSatisfiable(Exception):
    pass


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive range a ``Range`` header asks for, None for the whole object; raises
    RangeNotSatisfiable. Several ranges are answered with the whole object."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable
    return start, end


def _stream(request: Request, obj: RemoteObject, cache: dict[str, str]) -> Response:
    headers = {**cache, "accept-ranges": "bytes"}
    try:
        wanted = byte_range(request.headers.get("range"), obj.size)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={"content-range": f"bytes */{obj.size}"})
    if wanted is None:
        start, end, status = 0, obj.size - 1, 200
    else:
        start, end = wanted
        status = 206
        headers["content-range"] = f"bytes {start}-{end}/{obj.size}"
    headers["content-length"] = str(max(0, end - start + 1))
    if request.method == "HEAD" or obj.size == 0:
        return Response(status_code=status, headers=headers, media_type=obj.content_type)
    return StreamingResponse(iterate_in_threadpool(obj.read(start, end)), status_code=status,
                             headers=headers, media_type=obj.content_type)
