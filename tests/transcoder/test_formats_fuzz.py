"""Fuzzed container sniffing: the first bytes of an upload are the uploader's, so any bytes
give an allowed demuxer or a ValidationFailure with a reason, and real magic keeps its
meaning whatever follows it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from atproto_video.transcoder.errors import ValidationFailure
from atproto_video.transcoder.formats import ALLOWED_DEMUXERS, demuxer_for_magic, sniff
from tests.support.fuzzing import bounded

TS = 188
#: Each allowed container's magic, and what the sniffer must make of it.
MAGIC = [
    (b"\x00\x00\x00\x20ftypisom", "mov"),
    (b"\x00\x00\x00\x08wide", "mov"),
    (b"\x00\x00\x00\x10mdat", "mov"),
    (b"\x1a\x45\xdf\xa3", "matroska"),
    (b"\x00\x00\x01\xba", "mpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
]
#: Leading bytes of things that are not allowed: playlists, scripts, markup, images, audio.
OTHERS = [b"#EXTM3U\n", b"\xef\xbb\xbf#EXTM3U", b"ffconcat version 1.0\n", b"<?xml", b"\x89PNG",
          b"\xff\xd8\xff", b"BM", b"ID3", b"fLaC", b"OggS", b"\xff\xfb", b"\x47", b"",
          b"RIFF\x00\x00\x00\x00WAVE", b"RIFF\x00\x00\x00\x00WEBP"]  # fmt: skip
MOV_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"}


@st.composite
def transport_streams(draw: st.DrawFn) -> bytes:
    """TS (188-byte packets) or M2TS (4-byte timecode + packet), sync bytes right, rest random."""
    timecode = draw(st.booleans())
    packets = draw(st.integers(min_value=2, max_value=5))
    out = b""
    for _ in range(packets):
        body = draw(st.binary(min_size=TS - 1, max_size=TS - 1))
        out += (draw(st.binary(min_size=4, max_size=4)) if timecode else b"") + b"\x47" + body
    return out


def heads() -> st.SearchStrategy[bytes]:
    prefix = st.sampled_from([m for m, _ in MAGIC] + OTHERS)
    return st.one_of(
        st.tuples(prefix, st.binary(max_size=900)).map(b"".join),
        transport_streams(),
        st.binary(max_size=900),
    )


@bounded(600)
@given(heads())
def test_any_head_gives_an_allowed_demuxer_or_none(head: bytes) -> None:
    assert demuxer_for_magic(head) in (*ALLOWED_DEMUXERS, None)


@bounded(400)
@given(st.sampled_from(MAGIC), st.binary(max_size=900))
def test_magic_keeps_its_meaning_whatever_follows(magic: tuple[bytes, str], tail: bytes) -> None:
    prefix, demuxer = magic
    head = prefix + tail
    assume(head[4:8] not in MOV_BOXES or demuxer == "mov")  # a box name at 4 reads as MP4 first
    assert demuxer_for_magic(head) == demuxer


@bounded(300)
@given(transport_streams())
def test_transport_stream_sync_bytes_identify_it(head: bytes) -> None:
    assume(head[4:8] not in MOV_BOXES and not head.startswith((b"GIF87a", b"GIF89a")))
    assume(not head.startswith((b"\x1a\x45\xdf\xa3", b"\x00\x00\x01\xba", b"RIFF")))
    assert demuxer_for_magic(head) == "mpegts"


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """One directory for every example (hypothesis reruns a test body, not its fixtures)."""
    with tempfile.TemporaryDirectory(prefix="sniff-fuzz-") as tmp:
        yield Path(tmp)


@bounded(300)
@given(head=heads())
def test_sniff_names_a_demuxer_or_refuses_with_a_reason(scratch: Path, head: bytes) -> None:
    upload = scratch / "upload"
    upload.write_bytes(head)
    try:
        demuxer = sniff(upload)
    except ValidationFailure as exc:
        assert exc.failure_code == "validation_failure" and exc.message
        assert demuxer_for_magic(head) is None
        return
    assert demuxer in ALLOWED_DEMUXERS and demuxer == demuxer_for_magic(head)
