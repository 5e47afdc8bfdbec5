"""The running content hash: in order, early parts held, anything doubtful answers None."""

from __future__ import annotations

import hashlib
import os

from atproto_video.core.parthash import OrderedHashes

PARTS = [os.urandom(1000 + i) for i in range(6)]
WHOLE = hashlib.sha256(b"".join(PARTS)).hexdigest()
TAGS = {i + 1: f"t{i + 1}" for i in range(6)}


def test_in_order_and_slightly_out_of_order_parts_hash_the_whole_file() -> None:
    for order in ([1, 2, 3, 4, 5, 6], [2, 3, 1, 5, 6, 4], [3, 2, 1, 6, 5, 4]):
        hashes = OrderedHashes()
        for n in order:
            hashes.offer("s", n, [PARTS[n - 1]], TAGS[n])
        assert hashes.digest("s", TAGS) == WHOLE


def test_doubt_means_none() -> None:
    hashes = OrderedHashes(held_parts=2)
    for n in (2, 3, 4):  # part 1 went elsewhere: too many held, the cursor gives up
        hashes.offer("s", n, [PARTS[n - 1]], TAGS[n])
    hashes.offer("s", 1, [PARTS[0]], TAGS[1])
    assert hashes.digest("s", {1: "t1", 2: "t2", 3: "t3", 4: "t4"}) is None

    hashes = OrderedHashes()
    hashes.offer("r", 1, [PARTS[0]], "t1")
    hashes.offer("r", 1, [b"other bytes"], "t1-again")  # re-sent after it was hashed
    assert hashes.digest("r", {1: "t1-again"}) is None
    assert hashes.digest("r", {1: "t1"}) == hashlib.sha256(PARTS[0]).hexdigest()
    assert hashes.digest("unknown", {1: "t1"}) is None
    hashes.drop("r")
    assert hashes.digest("r", {1: "t1"}) is None


def test_sessions_are_bounded() -> None:
    hashes = OrderedHashes(sessions=2)
    for s in ("a", "b", "c"):
        hashes.offer(s, 1, [PARTS[0]], "t1")
    assert hashes.digest("a", {1: "t1"}) is None
    assert hashes.digest("c", {1: "t1"}) is not None


def test_early_parts_are_bounded_in_bytes() -> None:
    hashes = OrderedHashes(held_bytes=2500)
    hashes.offer("a", 2, [PARTS[1]], TAGS[2])  # 1001 bytes held
    hashes.offer("b", 2, [PARTS[1]], TAGS[2])  # 2002
    hashes.offer("c", 2, [PARTS[1]], TAGS[2])  # over the bound: c gives up
    assert hashes._held == 2002
    for s in ("a", "b", "c"):
        hashes.offer(s, 1, [PARTS[0]], TAGS[1])
    assert hashes._held == 0
    whole = hashlib.sha256(PARTS[0] + PARTS[1]).hexdigest()
    parts = {1: "t1", 2: "t2"}
    assert hashes.digest("a", parts) == hashes.digest("b", parts) == whole
    assert hashes.digest("c", parts) is None


def test_parts_hashed_in_the_background_are_waited_for() -> None:
    hashes = OrderedHashes()
    try:
        for n in (2, 1, 3, 5, 4, 6):
            hashes.submit("s", n, [PARTS[n - 1]], TAGS[n])
        assert hashes.digest("s", TAGS) == WHOLE
    finally:
        hashes.close()


def test_background_hashing_keeps_the_arrival_order() -> None:
    """One part held early at most, as the arrival order allows: a pool that reordered the
    parts of a session would hold more and give the running hash up."""
    hashes = OrderedHashes(held_parts=1)
    try:
        for _ in range(20):
            for n in (2, 1, 3, 4, 6, 5):
                hashes.submit("s", n, [PARTS[n - 1]], TAGS[n])
            assert hashes.digest("s", TAGS) == WHOLE
            hashes.drop("s")
    finally:
        hashes.close()
