"""Container sniffing and the options that confine ffmpeg to one local file."""

from __future__ import annotations

from pathlib import Path

import pytest

from atproto_video.transcoder.errors import ValidationFailure
from atproto_video.transcoder.formats import (
    demuxer_for_format_name,
    demuxer_for_magic,
    input_args,
    sniff,
)


@pytest.mark.parametrize(
    ("head", "demuxer"),
    [
        (b"\x00\x00\x00\x20ftypisom" + bytes(20), "mov"),
        (b"\x00\x00\x00\x14ftypqt  " + bytes(20), "mov"),
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x10mdat", "mov"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01", "matroska"),
        (b"\x00\x00\x01\xba\x44\x00\x04", "mpeg"),
        (b"GIF89a\x10\x00\x10\x00", "gif"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "avi"),
        ((b"\x47" + bytes(187)) * 4, "mpegts"),
        ((bytes(4) + b"\x47" + bytes(187)) * 4, "mpegts"),
    ],
)
def test_magic_bytes_select_an_allowed_demuxer(head: bytes, demuxer: str) -> None:
    assert demuxer_for_magic(head) == demuxer


def test_two_whole_transport_packets_are_enough_in_either_framing() -> None:
    """Found by tests/transcoder/test_formats_fuzz.py: two whole M2TS packets (384 bytes) were
    not recognised; the length check counted a third packet's timecode."""
    ts = (b"\x47" + bytes(187)) * 2
    m2ts = (bytes(4) + b"\x47" + bytes(187)) * 2
    assert demuxer_for_magic(ts) == demuxer_for_magic(m2ts) == "mpegts"
    assert demuxer_for_magic(ts[:-1]) is None and demuxer_for_magic(m2ts[:-1]) is None
    # Every whole packet in the head counts, the fourth M2TS one included.
    broken = bytearray((bytes(4) + b"\x47" + bytes(187)) * 4)
    broken[4 + 3 * 192] = 0
    assert demuxer_for_magic(bytes(broken)) is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", "HLS playlist"),
        (b"ffconcat version 1.0\nfile '/etc/passwd'\n", "concat script"),
        (b"hello, this is not a video\n", "text file"),
        (b"<?xml version='1.0'?><MPD/>", "markup"),
        (b"\x89PNG\r\n\x1a\n" + bytes(32), "still image"),
        (b"\xff\xd8\xff\xe0" + bytes(32), "still image"),
        (b"ID3\x04\x00" + bytes(32), "audio"),
        (b"\x47" + bytes(300), "not a recognised"),  # one sync byte is not a transport stream
        (bytes(range(256)) * 4, "not a recognised"),
    ],
)
def test_everything_else_is_rejected_before_ffmpeg(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "upload.mp4"  # the name and extension never matter
    path.write_bytes(content)
    with pytest.raises(ValidationFailure, match=reason):
        sniff(path)


def test_format_names_from_ffprobe_map_to_allowed_demuxers() -> None:
    assert demuxer_for_format_name("mov,mp4,m4a,3gp,3g2,mj2") == "mov"
    assert demuxer_for_format_name("matroska,webm") == "matroska"
    assert demuxer_for_format_name("mpegts") == "mpegts"
    assert demuxer_for_format_name("hls") is None
    assert demuxer_for_format_name("concat") is None
    assert demuxer_for_format_name("image2") is None


def test_input_args_confine_ffmpeg_to_the_one_local_file(tmp_path: Path) -> None:
    odd = tmp_path / "http:evil.mp4"
    args = input_args(odd, "mov", max_frame_pixels=1000)
    assert args[args.index("-protocol_whitelist") + 1] == "file"
    assert args[args.index("-f") + 1] == "mov"
    assert "hls" not in args[args.index("-format_whitelist") + 1].split(",")
    assert args[args.index("-enable_drefs") + 1] == "0"
    assert args[args.index("-max_pixels") + 1] == "1000"
    assert args[-2:] == ["-i", f"file:{odd.resolve()}"]
    with pytest.raises(ValidationFailure):
        input_args(odd, "hls", max_frame_pixels=1000)
