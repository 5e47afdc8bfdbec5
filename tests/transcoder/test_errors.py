"""Each failure carries the lexicon failureCode its job status reports."""

from __future__ import annotations

import json

import pytest

from atproto_video.transcoder.errors import EncodingFailure, TranscodeError, ValidationFailure


@pytest.mark.parametrize(
    ("error", "code"),
    [(ValidationFailure("the upload is a still image"), "validation_failure"),
     (EncodingFailure("ffmpeg failed: x264 error"), "encoding_failure")],
)
def test_failure_codes_and_messages(error: TranscodeError, code: str) -> None:
    assert isinstance(error, TranscodeError)
    assert error.failure_code == code
    assert str(error) == error.message


def test_json_is_what_the_worker_writes_to_its_termination_log() -> None:
    error = ValidationFailure("video is 700 s long; the maximum is 600 s")
    assert json.loads(json.dumps(error.to_json())) == {
        "failureCode": "validation_failure",
        "error": "video is 700 s long; the maximum is 600 s",
    }

