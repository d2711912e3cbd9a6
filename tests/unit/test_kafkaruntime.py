"""The local broker's runtime helpers (no broker needed)."""
from __future__ import annotations

from hashbridge.kafkaruntime import new_cluster_id


def test_cluster_ids_never_look_like_an_option() -> None:
    """The storage tool parses '-abc' as a flag: a cluster id must not start with '-'."""
    ids = [new_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids) and len(set(ids)) == len(ids)
