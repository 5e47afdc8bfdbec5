"""The container allow-list, decided by file content (never by name or Content-Type).

We look at the magic bytes ourselves before any ffmpeg process touches the file, then force
that demuxer with `-f` and `-format_whitelist`. ffmpeg's own probing would happily pick the
HLS, concat or image2 demuxers, which open other files and URLs named inside the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from atproto_video.transcoder.errors import ValidationFailure

#: Demuxers we accept, by ffmpeg name. None of them follows references to other files
#: (the mov demuxer can, via `dref` atoms, but only with `enable_drefs`, which we force off).
ALLOWED_DEMUXERS: tuple[str, ...] = ("mov", "matroska", "mpeg", "mpegts", "gif", "avi")

#: Human names for error messages and docs.
DESCRIPTIONS: dict[str, str] = {
    "mov": "MP4/QuickTime",
    "matroska": "Matroska/WebM",
    "mpeg": "MPEG program stream",
    "mpegts": "MPEG transport stream",
    "gif": "GIF",
    "avi": "AVI",
}

_MOV_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")
_TS_PACKET = 188
_SNIFF_BYTES = 4 * _TS_PACKET + 16
_SUPPORTED = ", ".join(DESCRIPTIONS.values())


def sniff(path: Path) -> str:
    """The allowed demuxer this file's first bytes identify; `ValidationFailure` otherwise."""
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as exc:
        raise ValidationFailure(f"cannot read the upload: {exc.strerror}") from None
    if not head:
        raise ValidationFailure("the upload is empty (0 bytes)")
    demuxer = demuxer_for_magic(head)
    if demuxer is None:
        raise ValidationFailure(f"{_describe_unknown(head)}; supported formats: {_SUPPORTED}")
    return demuxer


def demuxer_for_magic(head: bytes) -> str | None:
    """Map leading bytes to a demuxer name, or None when no allowed container matches."""
    if len(head) >= 8 and head[4:8] in _MOV_BOXES:
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    for packet in (_TS_PACKET, _TS_PACKET + 4):  # plain TS, or M2TS with 4-byte timecodes
        offset = packet - _TS_PACKET
        # Whole 188-byte packets in the head; in M2TS the first timecode precedes `offset`.
        whole = (len(head) - offset - _TS_PACKET) // packet + 1
        if whole >= 2 and all(head[offset + i * packet] == 0x47 for i in range(whole)):
            return "mpegts"
    return None


def demuxer_for_format_name(format_name: str) -> str | None:
    """The allowed demuxer behind an ffprobe `format_name` such as `mov,mp4,m4a,3gp,3g2,mj2`."""
    names = format_name.split(",")
    for demuxer in ALLOWED_DEMUXERS:
        if demuxer in names:
            return demuxer
    return None


def _describe_unknown(head: bytes) -> str:
    """A useful rejection reason; playlists and scripts get named so users see why."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.upper().startswith(b"#EXTM3U"):
        return "the upload is an HLS playlist, not a video file"
    if text.startswith(b"ffconcat"):
        return "the upload is an ffmpeg concat script, not a video file"
    if text[:1] == b"<":
        return "the upload is a markup document, not a video file"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"BM")) or head[8:12] == b"WEBP":
        return "the upload is a still image, not a video"
    if head.startswith((b"ID3", b"fLaC", b"OggS")) or head[8:12] == b"WAVE" or (
        len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
    ):
        return "the upload is audio or an unsupported container, not a supported video file"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        decoded = "\x00"  # binary
    if decoded.isprintable() or all(c.isprintable() or c in "\t\r\n" for c in decoded):
        return "the upload is a text file, not a video"
    return "the upload is not a recognised video container"


def input_args(
    path: Path, demuxer: str, *, max_frame_pixels: int, extra: Sequence[str] = ()
) -> list[str]:
    """ffmpeg/ffprobe input options that open exactly this one local file, nothing else.

    `file:` plus an absolute path stops a name like `http:x.mp4` being read as a URL; the
    protocol whitelist stops the demuxer opening anything but local files; `-f` and the format
    whitelist stop content-based demuxer switching; `max_pixels` caps every decoded frame.
    """
    if demuxer not in ALLOWED_DEMUXERS:
        raise ValidationFailure(f"container {demuxer!r} is not allowed")
    args = [
        "-protocol_whitelist", "file",
        "-format_whitelist", ",".join(ALLOWED_DEMUXERS),
        "-f", demuxer,
    ]
    if demuxer == "mov":
        args += ["-enable_drefs", "0", "-use_absolute_path", "0"]
    args += ["-max_pixels", str(max_frame_pixels), *extra, "-i", f"file:{path.resolve()}"]
    return args
