"""The app.bsky.video lexicons as pydantic models: what FastAPI validates requests against,
shapes answers with and publishes in ``/openapi.json``.

Written once from the lexicons (``shared/lexicons/app/bsky/video/*.json``) and kept equal to
them by tests/api/test_models.py: every property, requirement, type, bound, format, known
value and error of a lexicon is here, and nothing else except the fields marked ``x-spec``,
which SPEC.md adds (what production clients send and read beyond the lexicon text).
Lexicon objects are open: unknown input properties are ignored, as the reference server does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from atproto_video.core.lexicon import (
    NSID_ABORT_UPLOAD,
    NSID_FINISH_UPLOAD,
    NSID_GET_JOB_STATUS,
    NSID_GET_UPLOAD_LIMITS,
    NSID_GET_UPLOAD_STATUS,
    NSID_START_UPLOAD,
    NSID_UPLOAD_PART,
    NSID_UPLOAD_VIDEO,
    STATE_ORDER,
    FailureCode,
)

#: An optional property: absent when unset, never null (and null is not in the schema).
Absent: TypeAlias = SkipJsonSchema[None]

#: Lexicon string formats by their JSON Schema names (``did`` has none: kept as is).
JSON_SCHEMA_FORMATS = {"datetime": "date-time"}

#: Marks a field SPEC.md adds to a lexicon; the lexicon test accepts only these extras.
SPEC = "x-spec"


def _utf8_bounds(min_length: int | None, max_length: int | None) -> AfterValidator:
    """Lexicon string lengths count UTF-8 bytes (the reference validator's utf8Len)."""

    def check(value: str) -> str:
        size = len(value.encode())
        if max_length is not None and size > max_length:
            raise PydanticCustomError("string_too_long", "too long", {"max_length": max_length})
        if min_length is not None and size < min_length:
            raise PydanticCustomError("string_too_short", "too short", {"min_length": min_length})
        return value

    return AfterValidator(check)


def _extra(known: list[str] | Absent = None, fmt: str | Absent = None,
           spec: str | Absent = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if known is not None:
        out["x-knownValues"] = known  # open sets: other values are valid (lexicon knownValues)
    if fmt is not None:
        out["format"] = JSON_SCHEMA_FORMATS.get(fmt, fmt)
    if spec is not None:
        out[SPEC] = spec
    return out


def lex(min_length: int | Absent = None, max_length: int | Absent = None, *,
        known: list[str] | Absent = None, fmt: str | Absent = None,
        spec: str | Absent = None, description: str | Absent = None) -> Any:
    """A lexicon ``string``'s bounds, known values and format: ``Annotated[str, lex(...)]``
    (bounds also need :func:`_utf8_bounds`)."""
    return Field(min_length=min_length, max_length=max_length, description=description,
                 json_schema_extra=_extra(known, fmt, spec) or None)


JobId = Annotated[str, lex(1, 256), _utf8_bounds(1, 256)]
_JOB_STATES = [s.value for s in STATE_ORDER]
_FAILURE_CODES = [c.value for c in FailureCode]
_SESSION_STATES = ["created", "finishing", "completed", "failed", "aborted", "expired"]


class _Params(BaseModel):
    """Query parameters. An empty value counts as absent, as in the reference server."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _drop_empty(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v not in ("", None)}
        return data


class _Input(BaseModel):
    """A JSON request body: JSON types exactly (no "5" for 5, no true for 1), and an optional
    property is absent, never null (the schema does not allow null either)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("null", "must not be null")
        return value


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- app.bsky.video.defs ----------------------------------------------------------------------


class BlobLink(BaseModel):
    link: str = Field(alias="$link")
    model_config = ConfigDict(populate_by_name=True, extra="allow")


class Blob(BaseModel):
    """A lexicon ``blob`` in its JSON form; in Bluesky mode exactly what the PDS returned."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")
    type: Literal["blob"] = Field(alias="$type")
    ref: BlobLink
    mimeType: str
    size: int


class JobStatusDef(_Output):
    """app.bsky.video.defs#jobStatus."""

    jobId: str
    did: Annotated[str, lex(fmt="did")]
    state: Annotated[str, lex(known=_JOB_STATES, description=(
        "The state of the video processing job. All values not listed as a known value "
        "indicate that the job is in process."))]
    progress: Annotated[int, Field(ge=0, le=100, description=(
        "Progress within the current processing state."))] | Absent = None
    blob: Blob | Absent = None
    error: str | Absent = None
    failureCode: Annotated[str, lex(known=_FAILURE_CODES, description=(
        "A machine-readable code for why the video processing job failed."))] | Absent = None
    message: str | Absent = None


# -- getJobStatus, getUploadLimits, uploadVideo -----------------------------------------------


class GetJobStatusParams(_Params):
    jobId: str


class GetJobStatusOutput(_Output):
    jobStatus: JobStatusDef


class GetUploadLimitsOutput(_Output):
    canUpload: bool
    remainingDailyVideos: int | Absent = None
    remainingDailyBytes: int | Absent = None
    message: str | Absent = None
    error: str | Absent = None


_TOP = "SPEC 1: production answers the bare job status; social-app reads body.jobId"


class UploadVideoParams(_Params):
    did: Annotated[str, lex(fmt="did", spec=(
        "SPEC 1: clients send did=<uploader DID>; it must equal the token's iss"))] | Absent = None
    name: Annotated[str, lex(spec="SPEC 1: clients send name=<random>.<ext>")] | Absent = None


class UploadVideoOutput(_Output):
    """The job status under ``jobStatus`` (lexicon) and at the top level (production)."""

    jobStatus: JobStatusDef
    jobId: Annotated[str, lex(spec=_TOP)] | Absent = None
    did: Annotated[str, lex(fmt="did", spec=_TOP)] | Absent = None
    state: Annotated[str, lex(known=_JOB_STATES, spec=_TOP)] | Absent = None
    progress: Annotated[int, Field(ge=0, le=100, json_schema_extra={SPEC: _TOP})] | Absent = None
    blob: Annotated[Blob, Field(json_schema_extra={SPEC: _TOP})] | Absent = None
    error: Annotated[str, lex(spec="SPEC 1: already_exists on a duplicate")] | Absent = None
    failureCode: Annotated[str, lex(known=_FAILURE_CODES, spec=_TOP)] | Absent = None
    message: Annotated[str, lex(spec="SPEC 1: Video already processed")] | Absent = None


# -- the multipart methods --------------------------------------------------------------------

_ADVISORY = ("Advisory, non-authoritative {} used only for early failure; the authoritative "
             "probe runs asynchronously after upload.")
_COMPLETED_ID = Annotated[str, lex(1, 256, description=(
    "Present only when state is completed; may differ from jobId on deduplication.")),
    _utf8_bounds(1, 256)]
_FAILURE_REASON = Annotated[str, lex(max_length=1024, description=(
    "Present only when state is failed.")), _utf8_bounds(None, 1024)]


class StartUploadInput(_Input):
    sizeBytes: Annotated[int, Field(ge=1, description=(
        "Exact byte size of the complete upload-ready video file before it is split into "
        "parts."))]
    mimeType: Annotated[str, lex(3, 255, description="Declared MIME type of the video."),
                        _utf8_bounds(3, 255)]
    name: Annotated[str, lex(max_length=256, description="Optional client-provided file name."),
                    _utf8_bounds(None, 256)] | Absent = None
    durationMs: Annotated[int, Field(description=_ADVISORY.format("duration"))] | Absent = None
    width: Annotated[int, Field(description=_ADVISORY.format("width"))] | Absent = None
    height: Annotated[int, Field(description=_ADVISORY.format("height"))] | Absent = None


class StartUploadOutput(_Output):
    jobId: JobId
    partSizeBytes: int
    partCount: int
    expiresAt: Annotated[str, lex(fmt="datetime")]


class UploadPartParams(_Params):
    jobId: JobId
    partNumber: Annotated[int, Field(ge=1)]


class UploadPartOutput(_Output):
    partNumber: Annotated[int, Field(ge=1)]
    sizeBytes: int


class FinishUploadInput(_Input):
    jobId: JobId


class FinishUploadOutput(_Output):
    completedJobId: Annotated[str, lex(1, 256, description=(
        "The processing job to poll with getJobStatus; on deduplication this may differ from "
        "the input jobId.")), _utf8_bounds(1, 256)]
    jobStatus: JobStatusDef


class GetUploadStatusParams(_Params):
    jobId: JobId


class GetUploadStatusOutput(_Output):
    jobId: JobId
    partSizeBytes: int
    partCount: int
    receivedParts: list[Annotated[int, Field(ge=1)]]
    expiresAt: Annotated[str, lex(fmt="datetime")]
    state: Annotated[str, lex(max_length=32, known=_SESSION_STATES), _utf8_bounds(None, 32)]
    completedJobId: _COMPLETED_ID | Absent = None
    jobStatus: Annotated[JobStatusDef, Field(
        description="Present only when state is completed.")] | Absent = None
    failureReason: _FAILURE_REASON | Absent = None


class AbortUploadInput(_Input):
    jobId: JobId


class AbortUploadOutput(_Output):
    state: Annotated[str, lex(max_length=32, known=["aborted", "completed", "failed", "expired"]),
                     _utf8_bounds(None, 32)]
    completedJobId: Annotated[str, lex(1, 256, description=(
        "Present only when state is completed.")), _utf8_bounds(1, 256)] | Absent = None
    failureReason: _FAILURE_REASON | Absent = None


class XrpcErrorBody(BaseModel):
    """Every error answer (SPEC section 7)."""

    error: str
    message: str


# -- the methods ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LexError:
    name: str
    status: int
    description: str


@dataclass(frozen=True)
class Method:
    """One XRPC method: its HTTP verb, models, and the errors its lexicon declares (with the
    status this service answers them with)."""

    nsid: str
    http: Literal["GET", "POST"]
    description: str
    output: type[BaseModel]
    params: type[_Params] | Absent = None
    input: type[_Input] | Absent = None
    input_encoding: str | Absent = None
    errors: tuple[LexError, ...] = field(default=())


_NOT_FOUND = "The job ID is unknown or aged out of retention; known terminal sessions"
_NOT_READY = LexError("UploadNotReady", 400,
                      "A finish is in progress; check getUploadStatus and retry.")
_FAILED = LexError("UploadFailed", 400, "The session is known to have failed; the error "
                   "carries its failure reason.")
_ABORTED = LexError("UploadAborted", 400, "The session is known to have been aborted.")


METHODS: dict[str, Method] = {m.nsid: m for m in (
    Method(NSID_GET_JOB_STATUS, "GET", "Get status details for a video processing job.",
           GetJobStatusOutput, params=GetJobStatusParams),
    Method(NSID_GET_UPLOAD_LIMITS, "GET", "Get video upload limits for the authenticated user.",
           GetUploadLimitsOutput),
    Method(NSID_UPLOAD_VIDEO, "POST", "Upload a video to be processed then stored on the PDS.",
           UploadVideoOutput, params=UploadVideoParams, input_encoding="video/mp4"),
    Method(NSID_START_UPLOAD, "POST",
           "Start a multipart video upload. The declared size is exact, while optional media "
           "properties are advisory and used only for early failure; the authoritative probe "
           "runs asynchronously after upload.",
           StartUploadOutput, input=StartUploadInput, input_encoding="application/json",
           errors=(
               LexError("UnsupportedContentType", 400, "The declared MIME type is not supported."),
               LexError("VideoTooLarge", 400, "The exact file size exceeds the per-file cap or "
                        "remaining daily byte allowance."),
               LexError("VideoTooLong", 400, "The advisory declared duration exceeds the limit."),
               LexError("BadAspectRatio", 400,
                        "The advisory declared dimensions have an unsupported aspect ratio."),
               LexError("DailyLimitExceeded", 429, "The daily video or byte allowance, "
                        "including active reservations, is exhausted."),
               LexError("TooManyOpenUploads", 429,
                        "The account has reached its open multipart upload limit."),
               LexError("UploadForbidden", 403, "The account is not permitted to upload video."),
               LexError("ServiceOverloaded", 503, "The service is draining, at capacity, or "
                        "temporarily unable to create the multipart upload."),
           )),
    Method(NSID_UPLOAD_PART, "POST",
           "Upload one part. Parts are idempotent and may be retried or re-sent while the "
           "session is created. Each expected length is derived from the upload size and part "
           "size, and Content-Length must match exactly. ETags are never exposed to clients.",
           UploadPartOutput, params=UploadPartParams, input_encoding="application/octet-stream",
           errors=(
               LexError("UploadNotFound", 404, f"{_NOT_FOUND} are never reported as not found."),
               LexError("UploadExpired", 400, "The upload session expired before completion."),
               LexError("InvalidPartNumber", 400,
                        "The part number is outside the upload's valid part range."),
               LexError("PartSizeMismatch", 400, "Content-Length does not exactly match the "
                        "expected size for this part."),
               _NOT_READY, _FAILED, _ABORTED,
               LexError("UploadAlreadyCompleted", 400,
                        "The session is known to have already completed."),
               LexError("ServiceOverloaded", 503, "The service is draining or temporarily at "
                        "capacity; retry on another worker."),
           )),
    Method(NSID_FINISH_UPLOAD, "POST",
           "Finish an upload. This call is idempotent and safe to retry. On deduplication "
           "completedJobId may differ from the input jobId; poll getJobStatus with "
           "completedJobId. Probe-based validation failures surface later as JOB_STATE_FAILED "
           "from getJobStatus, not as errors from this call.",
           FinishUploadOutput, input=FinishUploadInput, input_encoding="application/json",
           errors=(
               LexError("UploadNotFound", 404, f"{_NOT_FOUND} are never reported as not found."),
               LexError("UploadExpired", 400,
                        "The upload session expired before finalization began."),
               LexError("MissingParts", 400, "Not all parts are recorded; the error message "
                        "lists the missing part numbers."),
               _NOT_READY,
               LexError("UnsupportedContentType", 400,
                        "The assembled object's detected content type is not supported."),
               _FAILED, _ABORTED,
               LexError("ServiceOverloaded", 503,
                        "The service is draining or temporarily at capacity; retry later."),
           )),
    Method(NSID_GET_UPLOAD_STATUS, "GET",
           "Get the authoritative status of the upload phase. Terminal states remain readable. "
           "completedJobId and jobStatus are present only for completed sessions; "
           "failureReason is present only for failed sessions.",
           GetUploadStatusOutput, params=GetUploadStatusParams,
           errors=(LexError("UploadNotFound", 404, f"{_NOT_FOUND} remain readable and are "
                            "never reported as not found."),)),
    Method(NSID_ABORT_UPLOAD, "POST",
           "Abort an upload only while it is created, releasing its quota reservation "
           "immediately. Terminal sessions are unchanged and return their terminal outcome. "
           "A finishing session returns UploadNotReady.",
           AbortUploadOutput, input=AbortUploadInput, input_encoding="application/json",
           errors=(
               LexError("UploadNotFound", 404, f"{_NOT_FOUND} return their outcome and are "
                        "never reported as not found."),
               _NOT_READY,
           )),
)}
