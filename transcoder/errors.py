"""Failures carry the lexicon `failureCode`, so callers map them to job status without guessing."""

from __future__ import annotations


class TranscodeError(Exception):
    """A terminal transcoding failure; `message` is safe to show to the uploader."""

    def __init__(self, failure_code: str, message: str) -> None:
        super().__init__(message)
        self.failure_code = failure_code
        self.message = message

    def to_json(self) -> dict[str, str]:
        """The shape written to stderr and the Kubernetes termination log."""
        return {"failureCode": self.failure_code, "error": self.message}


class ValidationFailure(TranscodeError):
    """The input is not a video we accept (wrong format, too big, undecodable)."""

    def __init__(self, message: str) -> None:
        super().__init__("validation_failure", message)


class EncodingFailure(TranscodeError):
    """The input was acceptable but producing the outputs failed (ffmpeg error, timeout)."""

    def __init__(self, message: str) -> None:
        super().__init__("encoding_failure", message)


class OutOfSpace(EncodingFailure):
    """The outputs did not fit: the storage volume (or its quota) is full. Not the video's
    fault, so the uploader is told to try again later rather than that the video is bad."""

    MESSAGE = ("the service ran out of storage space while processing the video; "
               "upload it again later")

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)
