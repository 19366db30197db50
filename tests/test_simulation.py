"""The ring in the simulator: fault-free behaviour, chosen faults, the application hook, replay."""

from __future__ import annotations

from typing import Any

import pytest

from tokenring.core import (
    Fence,
    Member,
    Send,
    Token,
    loss_timeout_ms_for,
    recovery_ms_for,
    rotation_ms_for,
)
from tokenring.simulation import (
    Fault,
    NetworkConfig,
    Node,
    Section,
    Simulation,
    WorkApplication,
    check_fence_owners,
    check_fences_per_member,
    check_majority_minting,
    check_single_holder,
    main,
    replay_command,
    run_scenario,
    scenario_for_seed,
)

HOLD_MS = 10
HANDOFF_MS = 20
CALM = NetworkConfig(delay_ms_min=1, delay_ms_max=HANDOFF_MS // 2 - 1)


def names(n: int) -> list[str]:
    return [f"m{i}" for i in range(n)]


@pytest.mark.parametrize("n", range(1, 10))
@pytest.mark.parametrize("seed", [1, 2])
def test_without_faults_one_holder_no_claim_and_each_member_once_per_rotation(
    n: int, seed: int
) -> None:
    members = names(n)
    # Some sections overrun their deadline, so the revoke path runs as well as release.
    sim = Simulation(
        members, seed=seed, hold_max_ms=HOLD_MS, handoff_timeout_ms=HANDOFF_MS, network=CALM,
        application=lambda _m: WorkApplication(work_ms_max=HOLD_MS, overrun_rate=0.2),
    )
    rotations = 40
    sim.run(rotations * rotation_ms_for(n, HOLD_MS, HANDOFF_MS))
    sections = sim.sections
    assert len(sections) >= rotations * n // 2, "the token kept moving"
    assert check_single_holder(sections) == []
    # Only the first member's bootstrap bid, once, at start; one token ever.
    assert sim.claims == [(0, "m0", 1)]
    assert [(member, fence) for _, member, fence in sim.mints] == [("m0", Fence(1, "m0", 1))]
    # Visited in ring order, each member once per rotation, the fence one step on each time.
    for index, section in enumerate(sections):
        assert section.member == members[index % n]
        assert section.fence == Fence(1, "m0", index + 1)
    assert {s.ended_by for s in sections[:-1]} <= {"release", "revoke"}
    if n > 1:
        assert {"release", "revoke"} <= {s.ended_by for s in sections}
    assert sim.counts["downs"] == 0 and sim.counts["purges"] == 0


def test_minority_partition_never_mints_and_the_majority_recovers() -> None:
    members = names(5)
    loss = loss_timeout_ms_for(5, HOLD_MS, HANDOFF_MS)
    start, length = 100, 5 * loss
    minorities_that_claimed = 0
    for minority in (("m0", "m1"), ("m3", "m4"), ("m2",)):
        sim = Simulation(
            members, seed=7, hold_max_ms=HOLD_MS, handoff_timeout_ms=HANDOFF_MS, network=CALM,
            faults=[Fault(start, "partition", minority), Fault(start + length, "heal")],
        )
        sim.run(start + length + recovery_ms_for(5, HOLD_MS, HANDOFF_MS))
        during = range(start, start + length)
        minority_claims = [c for c in sim.claims if c[1] in minority and c[0] in during]
        minority_grants = [
            s for s in sim.sections if s.member in minority and s.start_ms > start + loss
        ]
        # A side without a token bids for one; a side may also keep circulating a copy made by
        # a hand-off whose acknowledgement the partition cut (its fences still fence it out).
        assert minority_claims or minority_grants
        minorities_that_claimed += bool(minority_claims)
        assert not [m for m in sim.mints if m[1] in minority and m[0] in during]
        assert check_majority_minting(sim) == []
        # The majority side has a token during the partition, whichever side had it before.
        majority_grants = [
            s for s in sim.sections if s.member not in minority and s.start_ms in during
        ]
        assert majority_grants
        assert check_fences_per_member(sim.sections) == []
    assert minorities_that_claimed, "some cut-off side did bid (so the test can fail)"


def overrunning(_member: str) -> WorkApplication:
    return WorkApplication(work_ms_max=HOLD_MS, overrun_rate=1.0)


def _first_holding(members: list[str], member: str, after_ms: int, seed: int) -> int:
    # The same seed and application run identically up to the first fault.
    probe = Simulation(members, seed=seed, hold_max_ms=HOLD_MS, handoff_timeout_ms=HANDOFF_MS,
                       network=CALM, application=overrunning)
    probe.run(after_ms + 10 * rotation_ms_for(len(members), HOLD_MS, HANDOFF_MS))
    return next(s.start_ms for s in probe.sections if s.member == member and s.start_ms > after_ms)


def test_paused_holder_is_superseded_and_its_stale_token_purged() -> None:
    members = names(3)
    loss = loss_timeout_ms_for(3, HOLD_MS, HANDOFF_MS)
    grant_ms = _first_holding(members, "m1", 50, seed=3)
    pause_ms = 3 * loss
    sim = Simulation(
        members, seed=3, hold_max_ms=HOLD_MS, handoff_timeout_ms=HANDOFF_MS, network=CALM,
        application=overrunning,
        faults=[
            Fault(grant_ms + 1, "pause", ("m1",)),
            Fault(grant_ms + pause_ms, "resume", ("m1",)),
        ],
    )
    sim.run(grant_ms + pause_ms + recovery_ms_for(3, HOLD_MS, HANDOFF_MS))
    paused = next(s for s in sim.sections if s.member == "m1" and s.start_ms == grant_ms)
    # The paused holder believed it held the token all along; the others minted anew.
    assert paused.end_ms is not None and paused.end_ms >= grant_ms + pause_ms
    new = [m for m in sim.mints if m[0] > grant_ms]
    assert new and all(fence.epoch > paused.fence.epoch for _, _, fence in new)
    assert sim.counts["purges"] >= 1, "the resumed holder's token was purged where it arrived"
    # Nobody but m1 ever ran under m1's old generation after the new one existed.
    first_new_ms = new[0][0]
    assert not [s for s in sim.sections if s.start_ms > first_new_ms and s.fence < new[0][2]]
    after = [s for s in sim.sections if s.start_ms > grant_ms + pause_ms + 2 * loss]
    assert after and check_single_holder(after) == []
    assert {s.member for s in after} == set(members)


def test_crashed_member_is_skipped_and_rejoins_after_restart() -> None:
    members = names(4)
    loss = loss_timeout_ms_for(4, HOLD_MS, HANDOFF_MS)
    sim = Simulation(
        members, seed=5, hold_max_ms=HOLD_MS, handoff_timeout_ms=HANDOFF_MS, network=CALM,
        faults=[Fault(200, "crash", ("m2",)), Fault(200 + 3 * loss, "restart", ("m2",))],
    )
    sim.run(200 + 6 * loss)
    during = [s for s in sim.sections if 200 + loss < s.start_ms < 200 + 3 * loss]
    assert during and "m2" not in {s.member for s in during}
    assert {s.member for s in during} == {"m0", "m1", "m3"}
    after = [s for s in sim.sections if s.start_ms > 200 + 4 * loss]
    assert {s.member for s in after} == set(members)
    assert [s.incarnation for s in after if s.member == "m2"][0] == 1
    assert check_single_holder(after) == []


class PingApplication:
    """Under each grant, asks the next member for a pong, and releases when it comes back."""

    def __init__(self, members: list[str], log: list[tuple[str, str, Any]]) -> None:
        self.members = members
        self.log = log

    def on_grant(self, node: Node, fence: Fence, until_ms: int) -> None:
        peer = self.members[(self.members.index(node.member_id) + 1) % len(self.members)]
        node.send(peer, ("ping", fence.to_dict()))
        node.call_later(1, lambda: self.log.append((node.member_id, "tick", fence)))

    def on_revoke(self, node: Node, fence: Fence) -> None:
        self.log.append((node.member_id, "revoked", fence))

    def on_message(self, node: Node, sender: str, payload: Any) -> None:
        kind, fence_data = payload
        self.log.append((node.member_id, kind, Fence.from_dict(fence_data)))
        if kind == "ping":
            node.send(sender, ("pong", fence_data))
        else:
            node.release(Fence.from_dict(fence_data))


def test_application_hook_sends_through_the_network_and_releases() -> None:
    members = names(3)
    log: list[tuple[str, str, Any]] = []
    sim = Simulation(
        members, seed=11, hold_max_ms=HOLD_MS, handoff_timeout_ms=HANDOFF_MS,
        network=NetworkConfig(delay_ms_min=1, delay_ms_max=3),
        application=lambda _m: PingApplication(members, log),
    )
    sim.run(2000)
    sections = sim.sections
    assert len(sections) > 20
    released = [s for s in sections if s.ended_by == "release"]
    assert len(released) >= len(sections) - 1
    pongs = [(member, fence) for member, kind, fence in log if kind == "pong"]
    assert [(s.member, s.fence) for s in released] == pongs[: len(released)]
    assert ("m1", "ping", Fence(1, "m0", 1)) in log
    assert ("m0", "tick", Fence(1, "m0", 1)) in log


def test_the_checks_themselves_catch_violations() -> None:
    a1 = Section("a", 0, Fence(1, "a", 1), 0, 10, "release")
    b2 = Section("b", 0, Fence(1, "a", 2), 5, 12, "release")
    a3 = Section("a", 0, Fence(1, "a", 3), 12, None, "open")
    assert check_single_holder([a1, a3]) == []
    assert check_single_holder([a1, b2])
    assert check_single_holder([a3, Section("b", 0, Fence(1, "a", 4), 20, 21, "release")])
    assert check_fences_per_member([a1, a3]) == []
    assert check_fences_per_member([a3, a1])
    assert check_fences_per_member([a1, Section("a", 1, Fence(1, "a", 1), 30, 31, "release")]) == []
    assert check_fence_owners([a1, b2, a3]) == []
    assert check_fence_owners([a1, Section("b", 0, Fence(1, "a", 1), 30, 31, "release")])


class SameFenceSkip(Member):
    """A broken member whose skip re-sends the fence that may have arrived."""

    def _skip(self, handoff: Any, now_ms: int, out: list[Any]) -> None:
        self._handoff = None
        self._mark_down(handoff.target, out)
        target, _ = self._next_up(self._position[handoff.target])
        if target != self.member_id:
            self._handoff = type(handoff)(
                target, handoff.fence, now_ms, now_ms + self.handoff_timeout_ms
            )
            out.append(Send(target, Token(self.member_id, handoff.fence)))


@pytest.mark.parametrize("broken", [SameFenceSkip, "MinorityMinter"])
def test_the_seeded_schedules_catch_a_broken_core(broken: Any) -> None:
    broken = MinorityMinter if broken == "MinorityMinter" else broken
    _first_failing_seed(range(200), broken)


class MinorityMinter(Member):
    """A broken member that mints on its own vote: what the majority rule forbids."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._majority = 1


def _first_failing_seed(seeds: range, broken: type[Member]) -> int:
    for seed in seeds:
        if run_scenario(scenario_for_seed(seed), member_factory=broken).violations:
            return seed
    raise AssertionError("a broken core passed every schedule: the checks are too weak")


def test_a_failing_run_prints_its_seed_and_replays_exactly() -> None:
    seed = _first_failing_seed(range(100), MinorityMinter)
    scenario = scenario_for_seed(seed)
    first = run_scenario(scenario, trace=True, member_factory=MinorityMinter)
    again = run_scenario(scenario_for_seed(seed), trace=True, member_factory=MinorityMinter)
    assert first.violations and first.violations == again.violations
    assert first.digest == again.digest and first.events == again.events
    report = first.report()
    assert f"seed {seed}" in report and replay_command(seed) in report
    assert first.violations[0] in report


def test_the_same_seed_gives_the_same_run_event_for_event(
    capsys: pytest.CaptureFixture[str],
) -> None:
    one = run_scenario(scenario_for_seed(42), trace=True)
    two = run_scenario(scenario_for_seed(42), trace=True)
    other = run_scenario(scenario_for_seed(43), trace=True)
    assert one.digest == two.digest and one.events == two.events
    assert one.digest != other.digest
    # The replay command prints the same digest.
    assert main(["--seed", "42"]) == 0
    printed = capsys.readouterr().out
    assert f"trace digest {one.digest}" in printed and "ok: every property held" in printed


@pytest.mark.parametrize("module", ["tokenring.simulation", "bank.transfers.simulation"])
def test_the_replay_command_stops_quietly_when_its_output_is_closed(module: str) -> None:
    """``--trace | head``: the reader goes away before the command is done; the command
    stops without a trace of its own."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the command writes a line
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, "--seed", "42", "--trace"],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert done.stderr == "" and done.returncode == 1, done.stderr


def test_a_member_that_leaves_is_passed_over_without_a_claim() -> None:
    members = names(4)
    leave_ms = 500
    sim = Simulation(
        members, seed=9, hold_max_ms=HOLD_MS, handoff_timeout_ms=HANDOFF_MS, network=CALM,
        faults=[Fault(leave_ms, "leave", ("m2",))],
    )
    sim.run(leave_ms + 4 * loss_timeout_ms_for(4, HOLD_MS, HANDOFF_MS))
    after = [s for s in sim.sections if s.start_ms > leave_ms + HANDOFF_MS]
    assert after and {s.member for s in after} == {"m0", "m1", "m3"}
    assert sim.claims == [(0, "m0", 1)], "the token was handed on, never lost"
    assert check_single_holder(sim.sections) == []
    assert check_fences_per_member(sim.sections) == []
    for member in ("m0", "m1", "m3"):
        core = sim.core(member)
        assert core is not None and core.status.members["m2"] == "down"


def test_a_member_restarted_while_the_token_is_elsewhere_loses_no_token() -> None:
    """A member that crashes and is back a moment later, neither holding the token nor
    handing it on, is taken back at once: the token it meets is the live one, even when it
    has heard its fence (in an answer to its start-up probes) before the hand-off arrived.
    No claim follows on a calm network. (It once purged that token as a duplicate.)"""
    members = ["m0", "m1", "m2"]
    runs = 0
    for seed in range(8):
        for crash_at in range(1500, 1800, 20):
            probe = Simulation(members, seed=seed, hold_max_ms=50, handoff_timeout_ms=50, network=NetworkConfig(1, 24))
            probe.run(crash_at)
            core = probe._hosts["m2"].core
            assert core is not None
            if core.status.holding or core._handoff is not None:
                continue  # the token dies with it: a claim is the right answer
            runs += 1
            sim = Simulation(
                members, seed=seed, hold_max_ms=50, handoff_timeout_ms=50, network=NetworkConfig(1, 24),
                faults=[Fault(crash_at, "crash", ("m2",)), Fault(crash_at + 1, "restart", ("m2",))],
            )
            sim.run(crash_at + 3_000)
            assert [c for c in sim.claims if c[0] > crash_at] == [], (seed, crash_at)
    assert runs > 60
