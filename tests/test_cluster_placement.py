"""Placement decisions without Ray: capacity from resources, spreading, full cluster, node loss, draining,
joining; and the merged reply of a channel message sent to several nodes."""

import json

import pytest

from avatar.errors import ConfigError
from server.cluster.gateway import merge_channel_replies
from server.cluster.placement import ClusterFull, NodeState, Placement, session_capacity


def cluster(*nodes: tuple[str, str, int], timeout: float = 3.0) -> Placement:
    placement = Placement(node_timeout_s=timeout)
    for name, engine, capacity in nodes:
        assert placement.report(name, engine, capacity, running=0, draining=False, now=0.0)
    return placement


def start(placement: Placement, engine: str = "parametric", session: str | None = None) -> str:
    node = placement.place(engine)
    session = session or f"s{len(placement._where) + 1}"
    placement.placed(node.name, session)
    return node.name


def test_capacity_is_the_scarcest_resource_over_the_share_per_session():
    assert session_capacity({"CPU": 2}, {"CPU": 0.6}) == 3
    assert session_capacity({"CPU": 2}, {"CPU": 0.4}) == 5  # 2 / 0.4 is 4.999... in floating point
    assert session_capacity({"CPU": 16, "GPU": 1}, {"CPU": 1, "GPU": 0.25}) == 4
    assert session_capacity({"CPU": 16}, {"GPU": 0.5}) == 0  # no GPU: no emo session
    with pytest.raises(ConfigError):
        session_capacity({"CPU": 2}, {})


def test_sessions_spread_to_the_least_loaded_node_and_a_full_cluster_says_busy():
    placement = cluster(("a", "parametric", 3), ("b", "parametric", 3), ("c", "parametric", 2))
    placed = [start(placement) for _ in range(8)]
    assert sorted(placed.count(name) for name in "abc") == [2, 3, 3]
    assert placed[:3] == ["a", "b", "c"]  # one each first
    with pytest.raises(ClusterFull, match=r"^server busy: 8 sessions running on 3 nodes, try later$"):
        placement.place("parametric")
    placement.ended("s1")  # a session on a ends: its slot is free again
    assert placement.place("parametric").name == "a"


def test_offers_in_flight_count_so_concurrent_offers_do_not_overbook():
    placement = cluster(("a", "parametric", 1), ("b", "parametric", 1))
    first, second = placement.place("parametric"), placement.place("parametric")
    assert {first.name, second.name} == {"a", "b"}
    with pytest.raises(ClusterFull):
        placement.place("parametric")
    placement.failed(first.name)  # that offer failed (bad SDP): the slot is free again
    assert placement.place("parametric").name == first.name


def test_a_node_that_says_full_is_skipped_until_its_next_report():
    """Another gateway took its last slot: the node refused with 'server busy'."""
    placement = cluster(("a", "parametric", 2), ("b", "parametric", 2))
    node = placement.place("parametric")
    placement.failed(node.name, full=True)
    other = placement.place("parametric", exclude={node.name})
    assert other.name != node.name
    assert all(n.name != node.name for n in placement.candidates("parametric"))
    placement.report(node.name, "parametric", 2, running=1, draining=False, now=1.0)
    assert any(n.name == node.name for n in placement.candidates("parametric"))


def test_sessions_only_go_to_nodes_of_their_engine():
    placement = cluster(("cpu", "parametric", 4), ("gpu", "emo", 2))
    assert start(placement, "emo") == "gpu"
    assert start(placement, "parametric") == "cpu"
    with pytest.raises(ClusterFull, match="no box node is available"):
        placement.place("box")


def test_a_silent_node_is_lost_with_its_sessions_and_new_sessions_go_elsewhere():
    placement = cluster(("a", "parametric", 2), ("b", "parametric", 2), timeout=3.0)
    sessions = {f"s{i}": start(placement, session=f"s{i}") for i in range(3)}
    on_a = {s for s, node in sessions.items() if node == "a"}
    placement.report("b", "parametric", 2, running=1, draining=False, now=2.5)  # b keeps answering
    assert placement.expired(now=2.9) == {}
    lost = placement.expired(now=3.1)  # a last answered at 0.0
    assert lost == {"a": on_a}
    assert placement.nodes["a"].state == NodeState.LOST
    assert all(placement.node_of(s) is None for s in on_a)
    assert start(placement, session="late") == "b"
    with pytest.raises(ClusterFull):
        placement.place("parametric")
    assert placement.expired(now=10.0) == {"b": {s for s, n in sessions.items() if n == "b"} | {"late"}}
    with pytest.raises(ClusterFull, match="no parametric node is available"):
        placement.place("parametric")


def test_draining_nodes_keep_their_sessions_and_take_no_new_ones():
    placement = cluster(("a", "parametric", 3), ("b", "parametric", 3))
    first = start(placement, session="keep")
    placement.drain(first)
    assert placement.node_of("keep") == first
    assert {start(placement) for _ in range(3)} == {"b" if first == "a" else "a"}
    with pytest.raises(ClusterFull, match="server busy"):
        placement.place("parametric")
    # a node's own report says whether it drains (another gateway drained it)
    placement.report(first, "parametric", 3, running=1, draining=False, now=1.0)
    assert start(placement) == first
    placement.report("a", "parametric", 3, running=3, draining=True, now=2.0)
    placement.report("b", "parametric", 3, running=3, draining=True, now=2.0)
    with pytest.raises(ClusterFull, match="all 2 parametric nodes are draining"):
        placement.place("parametric")


def test_nodes_join_while_running_and_a_lost_node_can_rejoin():
    placement = cluster(("a", "parametric", 1))
    start(placement)
    with pytest.raises(ClusterFull):
        placement.place("parametric")
    assert placement.report("b", "parametric", 2, running=0, draining=False, now=1.0)  # joined
    assert not placement.report("b", "parametric", 2, running=0, draining=False, now=2.0)  # known
    assert start(placement) == "b"
    placement.lose("b")
    assert placement.report("b", "parametric", 2, running=0, draining=False, now=3.0)  # rejoined
    assert placement.nodes["b"].sessions == set()
    assert start(placement) == "b"


def test_a_session_placed_on_a_node_lost_meanwhile_is_not_counted():
    placement = cluster(("a", "parametric", 2))
    node = placement.place("parametric")
    placement.lose(node.name)
    placement.placed(node.name, "late")
    assert placement.node_of("late") is None


def queued(sessions: int, **extra) -> dict:
    return {"type": "queued", "request": "say", "voice": "en-us", "channel": "stage", "sessions": sessions,
            **extra}


def test_channel_replies_from_several_nodes_merge_like_one_server():
    no_one = {"type": "error", "message": "no session on channel 'stage'"}
    wrong = {"type": "error",
             "message": "wrong key for channel 'stage': use the key its overlay was opened with"}
    limited = {"type": "error",
               "message": "too many say/audio messages: at most 5 per 10 s; try again in 3 s"}
    merged = json.loads(merge_channel_replies([queued(2), no_one, queued(1, errors=["speech queue full"])]))
    assert merged == {**queued(3), "errors": ["speech queue full"]}
    merged = json.loads(merge_channel_replies([queued(1), wrong, limited]))
    assert merged["sessions"] == 1 and merged["errors"] == [limited["message"]]  # wrong key: not its audience
    assert json.loads(merge_channel_replies([no_one, wrong])) == wrong
    assert json.loads(merge_channel_replies([no_one, no_one]))["message"] == no_one["message"]
    assert json.loads(merge_channel_replies([wrong, limited]))["message"] == limited["message"]
    interrupted = [{"type": "interrupted", "dropped_s": 0.5, "channel": "stage", "sessions": 1},
                   {"type": "interrupted", "dropped_s": 2.0, "channel": "stage", "sessions": 2}]
    assert json.loads(merge_channel_replies(interrupted)) == {"type": "interrupted", "dropped_s": 2.0,
                                                             "channel": "stage", "sessions": 3}


def test_a_session_still_starting_is_not_counted_twice():
    """The node counts a session from the offer on; the gateway counts it as pending until the answer."""
    placement = cluster(("a", "parametric", 2))
    node = placement.place("parametric")
    placement.report("a", "parametric", 2, running=1, draining=False, now=1.0)  # the node has it already
    assert node.load == 1 and placement.place("parametric").name == "a"


def test_the_sizes_an_offer_may_ask_for_are_those_every_live_node_renders():
    placement = Placement(node_timeout_s=3.0)
    assert placement.sizes("parametric") == ()  # none reported yet
    placement.report("a", "parametric", 3, running=0, draining=False, now=0.0, sizes=[512, 256, 384])
    placement.report("b", "parametric", 3, running=0, draining=False, now=0.0, sizes=[256, 384])
    placement.report("g", "emo", 1, running=0, draining=False, now=0.0, sizes=[512])
    assert placement.sizes("parametric") == (256, 384)
    assert placement.sizes("emo") == (512,)
    placement.lose("b")
    assert placement.sizes("parametric") == (256, 384, 512)
