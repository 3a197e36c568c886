"""The faust workarounds, on the exact state seen when commits froze after a SIGKILL."""

from collections import defaultdict

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

TP0 = TP("events", 0)
ORIGINAL_NEW_OFFSET = Consumer._new_offset  # captured before any test installs the sanitizer


def frozen_state():
    """After the rebalance: committed 3423; acks include 3422 (before the rebalance) and
    re-delivered offsets acked twice."""
    fake = type("FakeConsumer", (), {})()
    acked = [3422] + list(range(3423, 3430)) + [3425, 3426] + list(range(3430, 3440))
    fake._acked = defaultdict(list, {TP0: acked})
    fake._acked_index = defaultdict(set, {TP0: set(acked)})
    fake._committed_offset = defaultdict(lambda: None, {TP0: 3423})
    fake._gap = defaultdict(IntervalTree)
    return fake


def test_faust_alone_stops_at_every_duplicate_ack():
    assert not getattr(ORIGINAL_NEW_OFFSET, "_recstream_fixed", False)
    fake = frozen_state()
    # 3422..3425 is the first consecutive run; the duplicate 3425 ends it
    assert ORIGINAL_NEW_OFFSET(fake, TP0) == 3426


def test_sanitized_acks_commit_to_the_end():
    from streams.faustutil import install_ack_sanitizer
    install_ack_sanitizer()
    fake = frozen_state()
    assert Consumer._new_offset(fake, TP0) == 3440
    assert fake._acked[TP0] == []
