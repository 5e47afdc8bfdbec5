"""The one JSON response type of the XRPC API: compact, UTF-8, ``application/json``."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse


class JSON(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()
