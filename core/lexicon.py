"""The app.bsky.video API in Python types: NSIDs, job states, failure codes, error names.

These mirror the lexicons (app.bsky.video.defs#jobStatus etc.) and SPEC.md; the API layer
builds its answers from here so the wire shapes live in one place.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NotRequired, TypedDict

NSID_UPLOAD_VIDEO = "app.bsky.video.uploadVideo"
NSID_GET_JOB_STATUS = "app.bsky.video.getJobStatus"
NSID_GET_UPLOAD_LIMITS = "app.bsky.video.getUploadLimits"
NSID_UPLOAD_BLOB = "com.atproto.repo.uploadBlob"
NSID_START_UPLOAD = "app.bsky.video.startUpload"
NSID_UPLOAD_PART = "app.bsky.video.uploadPart"
NSID_FINISH_UPLOAD = "app.bsky.video.finishUpload"
NSID_GET_UPLOAD_STATUS = "app.bsky.video.getUploadStatus"
NSID_ABORT_UPLOAD = "app.bsky.video.abortUpload"


class JobState(StrEnum):
    CREATED = "JOB_STATE_CREATED"
    ENCODING = "JOB_STATE_ENCODING"
    ENCODED = "JOB_STATE_ENCODED"
    SCANNING = "JOB_STATE_SCANNING"
    SCANNED = "JOB_STATE_SCANNED"
    UPLOADING = "JOB_STATE_UPLOADING"
    UPLOADED = "JOB_STATE_UPLOADED"
    COMPLETED = "JOB_STATE_COMPLETED"
    FAILED = "JOB_STATE_FAILED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED)


STATE_ORDER: tuple[JobState, ...] = tuple(JobState)


class FailureCode(StrEnum):
    VALIDATION = "validation_failure"
    ENCODING = "encoding_failure"
    PDS_UPLOAD = "pds_upload_failure"
    PDS_UPLOAD_SIZE = "pds_upload_unsupported_blob_size"
    GENERIC = "generic_failure"


# A lexicon ``blob`` in its JSON form: {"$type": "blob", "ref": {"$link": cid}, ...}.
Blob = dict[str, Any]


class JobStatus(TypedDict):
    jobId: str
    did: str
    state: str
    progress: NotRequired[int]
    blob: NotRequired[Blob]
    error: NotRequired[str]
    failureCode: NotRequired[str]
    message: NotRequired[str]


class UploadLimits(TypedDict):
    canUpload: bool
    remainingDailyVideos: NotRequired[int]
    remainingDailyBytes: NotRequired[int]
    message: NotRequired[str]
    error: NotRequired[str]


# Quota messages that social-app matches exactly (SPEC section 1).
QUOTA_BYTES_EXCEEDED = "User has exceeded daily upload bytes limit"
QUOTA_VIDEOS_EXCEEDED = "User has exceeded daily upload videos limit"
UPLOAD_NOT_ALLOWED = "User is not allowed to upload videos"
UPLOADS_DISABLED = "Uploading is disabled at the moment"

ALREADY_EXISTS = "already_exists"
ALREADY_EXISTS_MESSAGE = "Video already processed"
