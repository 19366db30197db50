"""The pure core, one rule at a time: members driven by hand, every message delivered on purpose."""

from __future__ import annotations

from typing import Any

import pytest

from tokenring.core import (
    Action,
    Claim,
    ClaimStarted,
    Fence,
    Grant,
    HandoffAcked,
    Leave,
    Leaving,
    Member,
    MemberDown,
    MemberUp,
    Message,
    Probe,
    ProbeAck,
    Received,
    Release,
    Revoke,
    Send,
    Start,
    TimerFired,
    Token,
    TokenAck,
    TokenMinted,
    TokenPurged,
    Vote,
    loss_timeout_ms_for,
    recovery_ms_for,
    rotation_ms_for,
)

HOLD_MS = 20
HANDOFF_MS = 50


def make(member_id: str, members: list[str], **kwargs: Any) -> Member:
    return Member(member_id, members, hold_max_ms=HOLD_MS, handoff_timeout_ms=HANDOFF_MS, **kwargs)


def sends(actions: list[Action], kind: type[Any] | None = None) -> list[Send]:
    return [
        a for a in actions
        if isinstance(a, Send) and (kind is None or isinstance(a.message, kind))
    ]


def of(actions: list[Action], kind: type[Any]) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def started(member: Member, now_ms: int = 0) -> list[Action]:
    return member.handle(Start(), now_ms)


def holding_ring(members: list[str]) -> tuple[dict[str, Member], Fence]:
    """A ring whose first member has minted the first token (every vote delivered)."""
    ring = {m: make(m, members) for m in members}
    pending: list[tuple[str, Message]] = []
    for m, member in ring.items():
        pending += [(s.to, s.message) for s in sends(started(member))]
    fence = None
    # Deliver everything (probes, claim, votes) until quiet; bounded by a count.
    for _ in range(1000):
        if not pending:
            break
        to, message = pending.pop(0)
        for action in ring[to].handle(Received(message), 1):
            if isinstance(action, Send):
                pending.append((action.to, action.message))
            if isinstance(action, Grant):
                fence = action.fence
    assert fence is not None and not pending
    return ring, fence


def test_bounds_are_the_documented_formulas() -> None:
    assert rotation_ms_for(3, 25, 150) == 3 * (25 + 150)
    assert loss_timeout_ms_for(3, 25, 150) == 2 * 3 * (25 + 150)
    loss = loss_timeout_ms_for(3, 25, 150)
    assert recovery_ms_for(3, 25, 150) == 3 * loss + 2 * rotation_ms_for(3, 25, 150)
    assert make("a", ["a", "b", "c"]).loss_timeout_ms == loss_timeout_ms_for(3, HOLD_MS, HANDOFF_MS)
    assert make("a", ["a", "b"], loss_timeout_ms=999).loss_timeout_ms == 999


def test_a_lone_member_mints_and_keeps_visiting_itself() -> None:
    member = make("a", ["a"])
    actions = started(member, 0)
    assert of(actions, ClaimStarted) == [ClaimStarted(1)]
    assert of(actions, TokenMinted) == [TokenMinted(Fence(1, "a", 1))]
    assert of(actions, Grant) == [Grant(Fence(1, "a", 1), HOLD_MS)]
    assert member.status.holding and member.status.successor is None
    # Released at once: kept for the idle hold, then the next visit is its own, one seq on.
    assert member.handle(Release(Fence(1, "a", 1)), 0) == []
    assert member.next_deadline_ms() == member.idle_hold_ms
    actions = member.handle(TimerFired(), member.idle_hold_ms)
    assert of(actions, Grant) == [Grant(Fence(1, "a", 2), member.idle_hold_ms + HOLD_MS)]
    assert member.status.visits == 2


def test_a_release_wanted_elsewhere_hands_on_at_once_without_the_idle_hold() -> None:
    members = ["a", "b", "c"]
    ring, fence = holding_ring(members)
    a = ring["a"]
    # Idle: released at 2 ms, kept until the idle hold is over (granted at 1 ms).
    assert sends(a.handle(Release(fence), 2), Token) == []
    assert a.next_deadline_ms() == 1 + a.idle_hold_ms
    (handoff,) = sends(a.handle(TimerFired(), 1 + a.idle_hold_ms), Token)
    assert handoff.to == "b"

    ring, fence = holding_ring(members)
    a = ring["a"]
    # Another member waits for the token: it leaves within the Release itself.
    (handoff,) = sends(a.handle(Release(fence, wanted=True), 2), Token)
    assert handoff.to == "b" and handoff.message == Token("a", Fence(1, "a", 2))
    assert not a.status.holding


def test_a_want_rides_the_token_round_the_ring_to_its_member() -> None:
    members = ["a", "b", "c"]
    ring, fence = holding_ring(members)
    a, b, c = ring["a"], ring["b"], ring["c"]
    # a still has work when it releases: the token carries its want.
    (handoff,) = sends(a.handle(Release(fence, again=True), 1 + a.idle_hold_ms), Token)
    assert handoff.message.wanting == ("a",)
    actions = b.handle(Received(handoff.message), 10)
    (grant,) = of(actions, Grant)
    assert grant.wanting == ("a",)  # b learns that a waits, with no message from a
    (handoff,) = sends(b.handle(Release(grant.fence, wanted=True), 11), Token)
    assert handoff.message.wanting == ("a",) and handoff.to == "c"
    # c adds its own want; both ride on.
    (grant,) = of(c.handle(Received(handoff.message), 12), Grant)
    (handoff,) = sends(c.handle(Release(grant.fence, wanted=True, again=True), 13), Token)
    assert handoff.message.wanting == ("a", "c") and handoff.to == "a"
    # At a, its own want is met: only c's goes on.
    (grant,) = of(a.handle(Received(handoff.message), 14), Grant)
    assert grant.wanting == ("c",)
    (handoff,) = sends(a.handle(Release(grant.fence, wanted=True), 15), Token)
    assert handoff.message.wanting == ("c",)
    # An id that is not a member is never carried further.
    (grant,) = of(b.handle(Received(Token("a", Fence(1, "a", 5), ("c", "zz"))), 16), Grant)
    assert grant.wanting == ("c",)


def test_first_member_bootstraps_with_a_majority_and_hands_on_with_ack() -> None:
    members = ["a", "b", "c"]
    ring, fence = holding_ring(members)
    assert fence == Fence(1, "a", 1)
    a, b = ring["a"], ring["b"]
    assert a.status.holding and a.status.successor == "b"
    # The deadline revokes an unreleased section and hands the token to the successor.
    actions = a.handle(TimerFired(), 1 + HOLD_MS)
    assert of(actions, Revoke) == [Revoke(fence)]
    (handoff,) = sends(actions, Token)
    assert handoff.to == "b" and handoff.message == Token("a", Fence(1, "a", 2))
    actions = b.handle(Received(handoff.message), 30)
    assert of(actions, Grant) == [Grant(Fence(1, "a", 2), 30 + HOLD_MS)]
    (ack,) = sends(actions, TokenAck)
    assert ack.to == "a"
    assert a.handle(Received(ack.message), 33) == [HandoffAcked("b", Fence(1, "a", 2), 33 - 21)]
    assert b.status.visits == 1 and not a.status.holding


def test_unacknowledged_handoff_skips_with_a_new_fence_and_the_silent_member_rejoins() -> None:
    members = ["a", "b", "c"]
    ring, fence = holding_ring(members)
    a, c = ring["a"], ring["c"]
    a.handle(Release(fence), 1)
    (first,) = sends(a.handle(TimerFired(), a.next_deadline_ms() or 0), Token)
    assert first.to == "b"
    sent_ms = a.next_deadline_ms()
    assert sent_ms is not None
    actions = a.handle(TimerFired(), sent_ms)
    assert of(actions, MemberDown) == [MemberDown("b")]
    (skip,) = sends(actions, Token)
    # Never the same fence twice: the skip travels one more place, so one more seq.
    assert skip.to == "c" and isinstance(skip.message, Token) and isinstance(first.message, Token)
    assert skip.message.fence == Fence(1, "a", first.message.fence.seq + 1)
    assert a.status.members["b"] == "down" and a.status.successor == "c"
    # The token now skips b without waiting; b speaking again (any message) brings it back.
    c.handle(Received(skip.message), sent_ms + 1)
    assert ring["b"].handle(Received(Probe("a", Fence(1, "a", 1))), sent_ms + 2)  # b answers
    assert a.handle(Received(Probe("b", Fence(1, "a", 2))), sent_ms + 3)[0] == MemberUp("b")
    assert a.status.members["b"] == "up" and a.status.successor == "b"


def test_down_members_are_probed_until_they_answer() -> None:
    members = ["a", "b", "c"]
    a = make("a", members, probe_interval_ms=100)
    started(a, 0)
    a.handle(Received(Leaving("c")), 1)
    assert a.status.members["c"] == "down"
    deadline = a.next_deadline_ms()
    assert deadline is not None and deadline <= 100
    probes = sends(a.handle(TimerFired(), 100), Probe)
    assert [p.to for p in probes] == ["c"]


def test_stale_and_duplicate_tokens_are_purged_and_the_sender_learns() -> None:
    members = ["a", "b", "c"]
    b = make("b", members)
    started(b, 0)
    b.handle(Received(Token("a", Fence(2, "a", 7))), 5)
    # A duplicate of the hand-off taken: acknowledged again, no second grant, no purge.
    again = b.handle(Received(Token("a", Fence(2, "a", 7))), 6)
    assert not of(again, Grant) and not of(again, TokenPurged)
    taken = Fence(2, "a", 7)
    assert sends(again, TokenAck)[0].message == TokenAck("b", taken, True, taken)
    # An older generation: purged here, and the answer carries what superseded it.
    stale = b.handle(Received(Token("c", Fence(1, "c", 50))), 7)
    assert of(stale, TokenPurged) == [TokenPurged(Fence(1, "c", 50), "stale")]
    assert sends(stale, TokenAck)[0].message == TokenAck("b", Fence(1, "c", 50), False, taken)
    assert not of(stale, Grant)
    # The same fence by another path (a skip's copy): one of the two is purged.
    dup = b.handle(Received(Token("c", Fence(2, "a", 7))), 8)
    assert of(dup, TokenPurged) == [TokenPurged(Fence(2, "a", 7), "duplicate")]


def test_a_fence_heard_of_before_its_token_arrives_does_not_purge_that_token() -> None:
    """A restarted member learns the fence of the hand-off to it from an answer to its probe
    (over HTTP that answer can overtake the hand-off's own request): the token then arriving
    is the live one, addressed to this place in the ring, not a copy of one taken here."""
    members = ["a", "b", "c"]
    c = make("c", members)
    started(c, 0)
    live = Fence(1, "a", 3)
    c.handle(Received(ProbeAck("a", live)), 1)
    assert c.status.fence == live and not c.status.holding
    taken = c.handle(Received(Token("a", live)), 2)
    assert of(taken, Grant) and not of(taken, TokenPurged)
    assert sends(taken, TokenAck)[0].message == TokenAck("c", live, True, live)
    # A second copy of that fence (a skip's, by another path) is the one purged.
    dup = c.handle(Received(Token("b", live)), 3)
    assert of(dup, TokenPurged) == [TokenPurged(live, "duplicate")] and not of(dup, Grant)
    # And a fence only heard of while this member holds one is no token for it either.
    b = make("b", members)
    started(b, 0)
    b.handle(Received(Token("a", Fence(1, "a", 2))), 1)
    assert of(b.handle(Received(Token("c", Fence(1, "a", 2))), 2), TokenPurged)


def test_a_refused_handoff_ends_and_says_it_was_not_taken() -> None:
    """The receiver had seen newer: the hand-off is over (the token moved on), but it was not
    taken, so it is no hand-off latency to count."""
    ring, fence = holding_ring(["a", "b", "c"])
    a = ring["a"]
    (handoff,) = sends(a.handle(TimerFired(), 1 + HOLD_MS), Token)
    newer = Fence(1, "a", 5)
    refused = a.handle(Received(TokenAck("b", handoff.message.fence, False, newer)), 30)
    assert of(refused, HandoffAcked) == [HandoffAcked("b", handoff.message.fence, 9, accepted=False)]
    assert a.status.fence == newer
    # Over all the same: no skip of b follows at the hand-off's deadline.
    assert not sends(a.handle(TimerFired(), 30 + HANDOFF_MS), Token)


def test_a_ring_restarted_whole_mints_above_the_floors_its_members_kept() -> None:
    """Members that remember no token but were given the fences their applications kept
    mint a generation above every one of them, whoever bids first."""
    members = ["a", "b", "c"]
    floors = {"a": None, "b": Fence(17, "c", 40), "c": Fence(9, "a", 3)}
    ring = {m: make(m, members, fence_floor=floors[m]) for m in members}
    assert ring["b"].status.fence == Fence(17, "c", 40) and not ring["b"].status.holding
    pending: list[tuple[str, Message]] = []
    for member in ring.values():
        pending += [(s.to, s.message) for s in sends(started(member))]
    minted: list[Fence] = []
    now = 1
    for _ in range(2000):  # bounded: deliver, and let timers fire, until a token is minted
        if minted:
            break
        if pending:
            to, message = pending.pop(0)
            actions = ring[to].handle(Received(message), now)
        else:
            now += 50
            actions = [a for m in ring.values() for a in m.handle(TimerFired(), now)]
        pending += [(s.to, s.message) for s in sends(actions)]
        minted += [a.fence for a in of(actions, TokenMinted)]
    assert minted and minted[0].epoch > 17, minted


def test_holder_that_learns_a_newer_generation_revokes_and_drops_its_token() -> None:
    members = ["a", "b", "c"]
    b = make("b", members)
    started(b, 0)
    b.handle(Received(Token("a", Fence(1, "a", 2))), 1)
    assert b.status.holding
    actions = b.handle(Received(Probe("c", Fence(2, "c", 1))), 2)
    assert of(actions, Revoke) == [Revoke(Fence(1, "a", 2))]
    assert of(actions, TokenPurged) == [TokenPurged(Fence(1, "a", 2), "superseded")]
    assert not b.status.holding and b.status.fence == Fence(2, "c", 1)
    # A later release of the dropped fence changes nothing.
    assert b.handle(Release(Fence(1, "a", 2)), 3) == []


def test_a_claim_mints_only_with_a_strict_majority() -> None:
    members = ["a", "b", "c", "d", "e"]
    c = make("c", members)
    started(c, 0)
    loss = c.loss_timeout_ms
    actions = c.handle(TimerFired(), loss)
    assert of(actions, ClaimStarted) == [ClaimStarted(1)]
    claims = sends(actions, Claim)
    assert sorted(s.to for s in claims) == ["a", "b", "d", "e"]
    nothing = Fence(0, "", 0)
    # Two of five (itself and one voter) is a minority: no token.
    assert not of(c.handle(Received(Vote("d", 1, "c", True, nothing)), loss + 1), TokenMinted)
    # The third assent makes a majority of the configured five.
    actions = c.handle(Received(Vote("e", 1, "c", True, nothing)), loss + 3)
    assert of(actions, TokenMinted) == [TokenMinted(Fence(1, "c", 1))]
    assert of(actions, Grant)


def test_a_vote_revealing_a_newer_token_makes_the_claimant_yield() -> None:
    members = ["a", "b", "c", "d", "e"]
    c = make("c", members)
    started(c, 0)
    loss = c.loss_timeout_ms
    c.handle(TimerFired(), loss)
    nothing = Fence(0, "", 0)
    c.handle(Received(Vote("d", 1, "c", True, nothing)), loss + 1)
    # This voter has seen a token above the bid: the token lives, so the bid is dropped...
    c.handle(Received(Vote("a", 1, "c", True, Fence(1, "e", 3))), loss + 2)
    assert c.status.fence == Fence(1, "e", 3)
    # ...and a later assent mints nothing.
    assert not of(c.handle(Received(Vote("e", 1, "c", True, nothing)), loss + 3), TokenMinted)
    assert not c.status.holding


def test_a_bid_that_cannot_reach_a_majority_is_abandoned_and_retried_later() -> None:
    members = ["a", "b", "c"]
    c = make("c", members)
    started(c, 0)
    loss = c.loss_timeout_ms
    c.handle(TimerFired(), loss)
    nothing = Fence(0, "", 0)
    c.handle(Received(Vote("a", 1, "c", False, nothing)), loss + 1)
    c.handle(Received(Vote("b", 1, "c", False, nothing)), loss + 2)
    # Both refused: the next bid comes one loss timeout after this one, with a higher epoch.
    assert c.next_deadline_ms() == 2 * loss
    assert of(c.handle(TimerFired(), 2 * loss), ClaimStarted) == [ClaimStarted(2)]


def test_voters_promise_the_highest_bid_and_refuse_while_the_token_is_fresh() -> None:
    members = ["a", "b", "c"]
    b = make("b", members)
    started(b, 0)
    nothing = Fence(0, "", 0)
    (vote,) = sends(b.handle(Received(Claim("a", 1, nothing)), 10), Vote)
    assert vote.message == Vote("b", 1, "a", True, nothing)
    # A lower or equal bid after a promise is refused; a higher one wins.
    (vote,) = sends(b.handle(Received(Claim("a", 1, nothing)), 11), Vote)
    assert isinstance(vote.message, Vote) and not vote.message.granted
    (vote,) = sends(b.handle(Received(Claim("c", 1, nothing)), 12), Vote)
    assert isinstance(vote.message, Vote) and vote.message.granted
    # Tokens of a generation older than the promise are stale here.
    actions = b.handle(Received(Token("a", Fence(1, "a", 1))), 13)
    assert of(actions, TokenPurged) and not of(actions, Grant)
    # Holding the token (fresh), b refuses any bid.
    b.handle(Received(Token("c", Fence(1, "c", 2))), 14)
    (vote,) = sends(b.handle(Received(Claim("a", 5, nothing)), 15), Vote)
    assert isinstance(vote.message, Vote) and not vote.message.granted


def test_a_restarted_member_cannot_mint_below_what_the_majority_has_seen() -> None:
    members = ["a", "b", "c"]
    ring, _ = holding_ring(members)
    seen = Fence(4, "b", 90)
    for m in ("b", "c"):
        ring[m].handle(Received(Token("a", seen)), 2)  # both have seen a late fence
    fresh_a = make("a", members)
    claim = sends(started(fresh_a, 3), Claim)
    assert claim and all(isinstance(s.message, Claim) and s.message.epoch == 1 for s in claim)
    loss = ring["b"].loss_timeout_ms
    for m in ("b", "c"):
        (vote,) = sends(ring[m].handle(Received(claim[0].message), 2 + loss), Vote)
        assert isinstance(vote.message, Vote)
        assert not vote.message.granted and vote.message.fence == seen
        fresh_a.handle(Received(vote.message), 3 + loss)
    assert not fresh_a.status.holding
    # Its next bid is above what the votes told it.
    assert fresh_a.status.fence == seen
    deadline = fresh_a.next_deadline_ms()
    assert deadline is not None
    assert of(fresh_a.handle(TimerFired(), deadline), ClaimStarted) == [ClaimStarted(5)]


def test_leave_hands_the_token_on_and_stops_taking_part() -> None:
    members = ["a", "b", "c"]
    ring, fence = holding_ring(members)
    a = ring["a"]
    actions = a.handle(Leave(), 2)
    assert of(actions, Revoke) == [Revoke(fence)]
    assert sorted(s.to for s in sends(actions, Leaving)) == ["b", "c"]
    (handoff,) = sends(actions, Token)
    assert handoff.to == "b"
    # A left member acknowledges no token, so a sender skips it.
    assert a.handle(Received(Token("c", Fence(1, "a", 9))), 3) == []
    actions = ring["c"].handle(Received(Leaving("a")), 3)
    assert actions == [MemberDown("a")]


def test_a_member_said_to_have_left_that_answers_a_probe_is_back() -> None:
    # A second copy of "a" started by mistake says Leaving in a's name as it fails; the real
    # "a" takes part all along, and answers the probes sent to it while it is down.
    members = ["a", "b", "c"]
    b = make("b", members, probe_interval_ms=100)
    started(b, 0)
    assert b.handle(Received(Leaving("a")), 1) == [MemberDown("a")]
    # What it sent before leaving, arriving late, does not bring it back.
    b.handle(Received(TokenAck("a", Fence(1, "a", 1), True, Fence(1, "a", 1))), 2)
    assert b.status.members["a"] == "down"
    probes = sends(b.handle(TimerFired(), 100), Probe)
    assert [p.to for p in probes] == ["a"]
    assert b.handle(Received(ProbeAck("a", Fence(1, "a", 1))), 101)[0] == MemberUp("a")
    assert b.status.members["a"] == "up"
    assert not sends(b.handle(TimerFired(), 300), Probe)  # no longer probed


def test_stray_messages_change_nothing() -> None:
    a = make("a", ["a", "b"])
    started(a, 0)
    before = a.status
    assert a.handle(Received(Token("zz", Fence(9, "zz", 9))), 1) == []
    assert a.handle(Received(Token("a", Fence(9, "a", 9))), 1) == []
    assert a.status == before


def test_programmer_errors_are_assertions() -> None:
    with pytest.raises(AssertionError):
        make("x", ["a", "b"])
    a = make("a", ["a", "b"])
    with pytest.raises(AssertionError):
        a.handle(TimerFired(), 0)
    started(a)
    with pytest.raises(AssertionError):
        a.handle(Start(), 1)


def test_a_promise_lasts_the_claim_window_then_blocks_nothing() -> None:
    members = ["a", "b", "c"]
    b = make("b", members)
    started(b, 0)
    nothing = Fence(0, "", 0)
    b.handle(Received(Claim("c", 4, nothing)), 10)
    # Within the claimant's window an older generation is stale here...
    early = b.handle(Received(Token("a", Fence(1, "a", 5))), 10 + b.claim_timeout_ms - 1)
    assert of(early, TokenPurged) and not of(early, Grant)
    # ...after it, the bid (never minted) blocks nothing: the live token is taken.
    late = b.handle(Received(Token("a", Fence(1, "a", 8))), 10 + b.claim_timeout_ms)
    assert of(late, Grant) == [Grant(Fence(1, "a", 8), 10 + b.claim_timeout_ms + HOLD_MS)]


def test_a_claimant_that_gives_up_takes_the_live_token_and_later_bids_higher() -> None:
    members = ["a", "b", "c"]
    c = make("c", members)
    started(c, 0)
    loss = c.loss_timeout_ms
    c.handle(TimerFired(), loss)
    nothing = Fence(0, "", 0)
    c.handle(Received(Vote("a", 1, "c", False, nothing)), loss + 1)
    c.handle(Received(Vote("b", 1, "c", False, nothing)), loss + 1)
    # The token c had given up for lost arrives: its abandoned bid does not make it stale.
    actions = c.handle(Received(Token("b", Fence(1, "b", 3))), loss + 2)
    assert of(actions, Grant)
    # Holding it, c refuses another bid, but remembers its epoch: its own next goes above.
    (vote,) = sends(c.handle(Received(Claim("a", 6, nothing)), loss + 2), Vote)
    assert isinstance(vote.message, Vote) and not vote.message.granted
    c.handle(Release(Fence(1, "b", 3)), loss + 2)
    (handoff,) = sends(c.handle(TimerFired(), loss + 2 + c.idle_hold_ms), Token)
    assert isinstance(handoff.message, Token)
    fence = handoff.message.fence
    c.handle(Received(TokenAck(handoff.to, fence, True, fence)), loss + 10)
    # Then the ring goes silent: c's next bid is above the epoch 6 it heard of.
    deadline = c.next_deadline_ms()
    assert deadline is not None
    assert of(c.handle(TimerFired(), deadline), ClaimStarted) == [ClaimStarted(7)]


def test_a_voter_that_passed_the_token_on_within_the_loss_timeout_refuses_a_bid() -> None:
    """Not holding the token is not enough to promise a bid: a voter that has seen it within
    the loss timeout knows the ring is alive, so a member back from a partition cannot make
    it mint a new generation (revoking the live holder's section) by bidding."""
    members = ["a", "b", "c"]
    b = make("b", members)
    started(b, 0)
    fence = Fence(1, "a", 2)
    (grant,) = of(b.handle(Received(Token("a", fence)), 10), Grant)
    b.handle(Release(grant.fence), 11)
    (handoff,) = sends(b.handle(TimerFired(), 15), Token)
    assert handoff.to == "c" and isinstance(handoff.message, Token)
    passed = handoff.message.fence
    b.handle(Received(TokenAck("c", passed, True, passed)), 16)
    assert not b.status.holding
    (vote,) = sends(b.handle(Received(Claim("a", 2, passed)), 100), Vote)
    assert isinstance(vote.message, Vote) and not vote.message.granted
    # Once it has seen no token for a loss timeout, the same bid is promised.
    (vote,) = sends(b.handle(Received(Claim("a", 2, passed)), 16 + b.loss_timeout_ms), Vote)
    assert isinstance(vote.message, Vote) and vote.message.granted
