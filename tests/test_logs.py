from __future__ import annotations

import json
import logging

from atproto_video.core.logs import JsonFormatter


def test_json_lines_carry_job_and_did() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "job %s", ("done",), None)
    record.job_id = "abc"
    record.did = "did:plc:x"
    record.color_message = "\x1b[36mjob\x1b[0m"
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "job done" and line["level"] == "info"
    assert line["job_id"] == "abc" and line["did"] == "did:plc:x"
    assert "color_message" not in line
