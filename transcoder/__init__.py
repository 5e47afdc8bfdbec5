"""Probe, input safety and the ffmpeg pipeline; the same code runs in-process and in workers."""

from atproto_video.transcoder.contract import TARGETS
from atproto_video.transcoder.errors import EncodingFailure, TranscodeError, ValidationFailure
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.pipeline import (
    TranscodeResult,
    transcode,
    transcode_target,
    write_master,
)
from atproto_video.transcoder.probe import SourceInfo, probe

__all__ = [
    "TARGETS",
    "EncodingFailure",
    "SourceInfo",
    "TranscodeError",
    "TranscodeLimits",
    "TranscodeResult",
    "ValidationFailure",
    "probe",
    "transcode",
    "transcode_target",
    "write_master",
]
