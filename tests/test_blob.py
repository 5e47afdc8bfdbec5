from __future__ import annotations

from pathlib import Path

from atproto_video.core.blob import blob_cid, blob_for_file, cid_for_bytes


def test_cid_matches_reference_vector() -> None:
    # The CID the atproto reference implementation gives for b"hello world" (raw, sha-256).
    assert cid_for_bytes(b"hello world") == (
        "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    )


def test_blob_for_file(tmp_path: Path) -> None:
    data = b"\x00\x01" * 100_000
    path = tmp_path / "video.mp4"
    path.write_bytes(data)
    blob = blob_for_file(path)
    assert blob["$type"] == "blob"
    assert blob["mimeType"] == "video/mp4"
    assert blob["size"] == len(data)
    assert blob_cid(blob) == cid_for_bytes(data)
    assert blob_cid(blob).startswith("bafkrei")
