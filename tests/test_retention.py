"""The pure retention policy, and a cross-check against TF1's real Saver with an injected clock."""

from __future__ import annotations

import math

import pytest

from jaxsaver._retention import (
    RetentionPolicy,
    RetentionState,
    initial_state,
    record_checkpoint,
    with_last_checkpoints,
)


def run(policy: RetentionPolicy, saves: list[tuple[str, float]], built_at: float = 0.0):
    """Drives the policy through ``saves``; returns the final state and all deletions."""
    state = initial_state(policy, built_at)
    deleted: list[str] = []
    for path, now in saves:
        state, doomed = record_checkpoint(policy, state, path, now)
        deleted += doomed
    return state, deleted


# Scenarios shared by the pure tests and the TF cross-check:
# (id, max_to_keep, keep_checkpoint_every_n_hours, built_at, [(name, time)], listed, deleted).
SCENARIOS = [
    ("max2", 2, 10000.0, 0.0, [("s1", 1), ("s2", 2), ("s3", 3)], ["s2", "s3"], ["s1"]),
    ("resave", 2, 10000.0, 0.0, [("s1", 1), ("s2", 2), ("s1", 3)], ["s2", "s1"], []),
    (
        "resave_then_overflow",
        2,
        10000.0,
        0.0,
        [("s1", 1), ("s2", 2), ("s2", 3), ("s3", 4)],
        ["s2", "s3"],
        ["s1"],
    ),
    ("none", None, 10000.0, 0.0, [("s1", 1), ("s2", 2), ("s3", 3)], [], []),
    ("zero", 0, 10000.0, 0.0, [("s1", 1), ("s2", 2), ("s3", 3)], [], []),
    # A period of float32(1/3600) * 3600 = 1.0000000242 s; deadline starts at 0 + period.
    (
        "hours_1s",
        1,
        1 / 3600,
        0.0,
        [("a", 0.0), ("b", 0.5), ("c", 1.2), ("d", 2.5), ("e", 2.6), ("f", 3.1), ("g", 4.0)],
        ["g"],
        ["a", "b", "e"],
    ),
    (
        "hours_max2",
        2,
        1 / 3600,
        0.0,
        [("a", 0.0), ("b", 0.5), ("c", 1.2), ("d", 1.9), ("e", 2.5), ("f", 5.0), ("g", 5.1)],
        ["f", "g"],
        ["a", "b", "d"],
    ),
    # The comparison is strict: a checkpoint written exactly at the deadline is deleted.
    (
        "hours_boundary",
        1,
        0.5,
        0.0,
        [("a", 1800.0), ("b", 1800.5), ("c", 1801.0), ("d", 3600.5), ("e", 3601.0)],
        ["e"],
        ["a", "c"],
    ),
    # TF's literal arithmetic for a negative max_to_keep: each new checkpoint leaves the list.
    ("negative", -1, 10000.0, 0.0, [("s1", 1), ("s2", 2)], [], ["s1", "s2"]),
]


@pytest.mark.parametrize(
    "max_to_keep,hours,built_at,saves,listed,deleted",
    [s[1:] for s in SCENARIOS],
    ids=[s[0] for s in SCENARIOS],
)
def test_scenarios(max_to_keep, hours, built_at, saves, listed, deleted):
    policy = RetentionPolicy(max_to_keep=max_to_keep, keep_checkpoint_every_n_hours=hours)
    state, got_deleted = run(policy, saves, built_at)
    assert list(state.paths) == listed
    assert got_deleted == deleted


def test_max_to_keep_2_step_by_step():
    policy = RetentionPolicy(max_to_keep=2)
    state = initial_state(policy, now=100.0)
    assert state.next_checkpoint_time == 100.0 + policy.period_seconds
    state, d1 = record_checkpoint(policy, state, "s1", 101.0)
    state, d2 = record_checkpoint(policy, state, "s2", 102.0)
    state, d3 = record_checkpoint(policy, state, "s3", 103.0)
    assert (d1, d2, d3) == ([], [], ["s1"])
    assert state.last_checkpoints == (("s2", 102.0), ("s3", 103.0))
    # Re-saving s2 moves it last with the new time and deletes nothing.
    state, d4 = record_checkpoint(policy, state, "s2", 104.0)
    assert d4 == []
    assert state.last_checkpoints == (("s3", 103.0), ("s2", 104.0))


@pytest.mark.parametrize("max_to_keep", [None, 0])
def test_unlimited_tracks_nothing(max_to_keep):
    policy = RetentionPolicy(max_to_keep=max_to_keep)
    start = initial_state(policy, 0.0)
    state = start
    for i in range(10):
        state, doomed = record_checkpoint(policy, state, f"s{i}", float(i))
        assert doomed == []
    assert state == start
    # TF leaves a list set by set_last_checkpoints untouched too.
    preset = with_last_checkpoints(start, [("old", 1.0)])
    assert record_checkpoint(policy, preset, "new", 2.0) == (preset, [])


def test_preservation_advances_deadline_once():
    policy = RetentionPolicy(max_to_keep=1, keep_checkpoint_every_n_hours=0.5)
    state = RetentionState(last_checkpoints=(("a", 9000.0),), next_checkpoint_time=1800.0)
    state, doomed = record_checkpoint(policy, state, "b", 9001.0)
    assert doomed == []
    # One period per preserved checkpoint, no catching up to "now".
    assert state.next_checkpoint_time == 3600.0
    assert state.paths == ("b",)


def test_period_is_float32_like_saver_def():
    assert RetentionPolicy(keep_checkpoint_every_n_hours=0.5).period_seconds == 1800.0
    period = RetentionPolicy(keep_checkpoint_every_n_hours=1 / 3600).period_seconds
    assert period != 1.0 and period == pytest.approx(1.0, rel=1e-7)


def test_set_last_checkpoints_without_time_is_always_preserved():
    policy = RetentionPolicy(max_to_keep=1)
    state = with_last_checkpoints(initial_state(policy, 0.0), ["legacy"])
    assert state.last_checkpoints == (("legacy", math.inf),)
    state, doomed = record_checkpoint(policy, state, "new", 1.0)
    assert doomed == [] and state.paths == ("new",)


def test_values_are_frozen():
    state = RetentionState(next_checkpoint_time=0.0)
    with pytest.raises(AttributeError):
        state.next_checkpoint_time = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# CROSS-CHECK AGAINST TENSORFLOW: the same scenarios through a real tf.compat.v1.train.Saver in
# graph mode, with `time` inside tensorflow.python.training.saver replaced by an injected clock;
# compares Saver.last_checkpoints and which checkpoints survive on disk with the pure policy.
# --------------------------------------------------------------------------------------------


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "max_to_keep,hours,built_at,saves,listed,deleted",
    [s[1:] for s in SCENARIOS],
    ids=[s[0] for s in SCENARIOS],
)
def test_cross_check_against_tensorflow_saver(
    tmp_path, monkeypatch, max_to_keep, hours, built_at, saves, listed, deleted
):
    tf = pytest.importorskip("tensorflow")
    from tensorflow.python.training import saver as tf_saver

    clock = _Clock(built_at)
    monkeypatch.setattr(tf_saver, "time", clock)
    prefix = {name: str(tmp_path / name) for name, _ in saves}

    graph = tf.Graph()
    with graph.as_default():
        var = tf.compat.v1.Variable([1.0, 2.0], name="v")
        saver = tf.compat.v1.train.Saver(
            [var], max_to_keep=max_to_keep, keep_checkpoint_every_n_hours=hours
        )
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(var.initializer)
            for name, now in saves:
                clock.now = now
                saver.save(sess, prefix[name], write_meta_graph=False)
    tf_listed = list(saver.last_checkpoints)
    tf_alive = sorted(n for n in prefix if (tmp_path / f"{n}.index").exists())

    policy = RetentionPolicy(max_to_keep=max_to_keep, keep_checkpoint_every_n_hours=hours)
    state, ours_deleted = run(policy, [(prefix[n], t) for n, t in saves], built_at)
    ours_alive = sorted(n for n in prefix if prefix[n] not in ours_deleted)

    assert list(state.paths) == tf_listed == [prefix[n] for n in listed]
    assert ours_alive == tf_alive
    assert saver._next_checkpoint_time == state.next_checkpoint_time
