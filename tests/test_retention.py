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


# --------------------------------------------------------------------------------------------
# CheckpointManager policies: pure objects over (step, time, score), no filesystem.
# --------------------------------------------------------------------------------------------

from jaxsaver._errors import InvalidArgumentError  # noqa: E402
from jaxsaver._retention import (  # noqa: E402
    AnyOf,
    BestN,
    CheckpointInfo,
    EveryNSeconds,
    EveryNSteps,
    Latest,
    LatestN,
    ManagerPolicy,
    keep_reasons,
)

LOSSES = [0.9, 0.5, 0.8, 0.3, 0.7, 0.6, 0.2, 0.95, 0.85, 0.99]  # steps 1..10: best are 7 (0.2), 4 (0.3)


def simulate(policy, infos):
    """What a manager tracks after saving ``infos`` one by one, applying ``policy`` after each."""
    tracked: list[CheckpointInfo] = []
    deleted: list[int] = []
    for info in infos:
        tracked.append(info)
        keep = policy.keep(tracked)
        deleted += [c.step for c in tracked if c.step not in keep]
        tracked = [c for c in tracked if c.step in keep]
    return [c.step for c in tracked], deleted


def infos_for(losses=LOSSES, period=60.0):
    return [CheckpointInfo(step=s, time=1000.0 + period * s, score=l) for s, l in enumerate(losses, start=1)]


def test_best_n_keeps_the_two_lowest_losses_plus_the_latest():
    kept, deleted = simulate(ManagerPolicy(max_to_keep=1, best_n=2, best_mode="min"), infos_for())
    assert kept == [4, 7, 10]
    assert sorted(deleted) == [1, 2, 3, 5, 6, 8, 9]


def test_best_n_max_mode_keeps_the_highest():
    kept, _ = simulate(ManagerPolicy(max_to_keep=1, best_n=2, best_mode="max"), infos_for())
    assert kept == [8, 10]  # 0.99 (step 10, also the latest) and 0.95 (step 8)
    assert BestN(n=2, mode="max").keep(infos_for()) == frozenset({8, 10})


def test_keep_every_n_steps_keeps_multiples():
    kept, _ = simulate(ManagerPolicy(max_to_keep=1, keep_every_n_steps=4), infos_for())
    assert kept == [4, 8, 10]
    assert EveryNSteps(n=4).keep(infos_for()) == frozenset({4, 8})
    assert EveryNSteps(n=4).keep([CheckpointInfo(step=0, time=0.0)]) == frozenset({0})


def test_policies_combine_as_a_union():
    policy = ManagerPolicy(max_to_keep=2, keep_every_n_steps=4, best_n=1)
    kept, _ = simulate(policy, infos_for())
    # latest 2 (9, 10) | multiples of 4 (4, 8) | best loss (7)
    assert kept == [4, 7, 8, 9, 10]
    reasons = policy.reasons([c for c in infos_for() if c.step in kept])
    assert reasons == {
        4: ("keep_every_n_steps=4",),
        7: ("best_n=1 (min)",),
        8: ("keep_every_n_steps=4",),
        9: ("max_to_keep=2",),
        10: ("latest", "max_to_keep=2"),
    }


def test_incremental_equals_one_shot_for_every_policy():
    """Deleting what a policy does not keep never changes what it keeps (restart-safe)."""
    infos = infos_for(period=37.0)
    for policy in [LatestN(n=3), EveryNSteps(n=3), EveryNSeconds(seconds=100.0), BestN(n=3), Latest(),
                   AnyOf(policies=(LatestN(n=2), EveryNSeconds(seconds=150.0), BestN(n=2, mode="max")))]:
        kept, _ = simulate(policy, infos)
        assert kept == sorted(policy.keep(infos)), policy


def test_every_n_seconds_keeps_one_per_period():
    infos = [CheckpointInfo(step=s, time=t) for s, t in [(1, 0.0), (2, 50.0), (3, 99.9), (4, 100.0), (5, 150.0), (6, 260.0)]]
    assert sorted(EveryNSeconds(seconds=100.0).keep(infos)) == [1, 4, 6]
    kept, _ = simulate(ManagerPolicy(max_to_keep=1, keep_checkpoint_every_n_hours=100 / 3600), infos)
    assert kept == [1, 4, 6]


def test_best_n_ignores_unscored_ranks_nan_last_and_prefers_newer_ties():
    infos = [
        CheckpointInfo(step=1, time=0.0, score=float("nan")),
        CheckpointInfo(step=2, time=0.0, score=None),
        CheckpointInfo(step=3, time=0.0, score=0.5),
        CheckpointInfo(step=4, time=0.0, score=0.5),
    ]
    assert BestN(n=1).keep(infos) == frozenset({4})
    assert BestN(n=3).keep(infos) == frozenset({1, 3, 4})
    assert BestN(n=3, mode="max").keep(infos) == frozenset({1, 3, 4})
    assert BestN(n=1, mode="max").keep(infos) == frozenset({4})


def test_max_to_keep_none_keeps_everything():
    policy = ManagerPolicy(max_to_keep=None, best_n=1)
    kept, deleted = simulate(policy, infos_for())
    assert kept == list(range(1, 11)) and deleted == []


def test_latest_n_and_latest_on_empty_and_unsorted_lists():
    assert Latest().keep([]) == frozenset() and LatestN(n=2).keep([]) == frozenset()
    infos = [CheckpointInfo(step=s, time=0.0) for s in (5, 1, 9, 3)]
    assert LatestN(n=2).keep(infos) == frozenset({5, 9})
    assert keep_reasons([Latest()], infos) == {5: (), 1: (), 9: ("latest",), 3: ()}


@pytest.mark.parametrize(
    "make",
    [
        lambda: LatestN(n=0),
        lambda: LatestN(n=True),
        lambda: EveryNSteps(n=-4),
        lambda: EveryNSeconds(seconds=0.0),
        lambda: BestN(n=2, mode="avg"),
        lambda: BestN(n=1.5),
        lambda: ManagerPolicy(max_to_keep=0),
        lambda: ManagerPolicy(keep_checkpoint_every_n_hours=-1.0),
        lambda: ManagerPolicy(best_mode="lowest"),
        lambda: ManagerPolicy.from_dict({"max_to_keep": 2, "rm_rf": True}),
        lambda: ManagerPolicy.from_dict(["max_to_keep", 2]),
        lambda: ManagerPolicy.from_dict({"max_to_keep": "2"}),
    ],
)
def test_invalid_settings_are_errors(make):
    with pytest.raises(InvalidArgumentError):
        make()


def test_manager_policy_round_trips_through_a_dict():
    policy = ManagerPolicy(max_to_keep=3, keep_every_n_steps=10, keep_checkpoint_every_n_hours=0.5,
                           best_n=2, best_mode="max")
    assert ManagerPolicy.from_dict(policy.as_dict()) == policy
    assert [p.label for p in policy.policies()] == [
        "latest", "max_to_keep=3", "keep_every_n_steps=10", "keep_checkpoint_every_n_hours=0.5", "best_n=2 (max)",
    ]
