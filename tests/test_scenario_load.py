"""How the load's clients behave when a bank does not answer (``scenarios.workload``): the
shared record of banks and links that gave no answer (``Unanswered``), judged on a hand-driven
clock, and the bank workload run against the fake consortium with one bank stopped. No bank
processes: a few seconds."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest

from bank.process import free_ports
from scenarios.client import Answer, ApiClient
from scenarios.fake_consortium import FakeConsortium, serve
from scenarios.history import Operation, Outcome
from scenarios.monitor import STATUS_TIMEOUT_S, RingMonitor
from scenarios.workload import (
    SILENT_AFTER_S,
    AVOID_S,
    Recorder,
    Teller,
    Unanswered,
    WorkloadOptions,
    run_bank_workload,
    transfer_home,
)

BANKS = ["alfa", "beta", "gama"]
TIMEOUT = Answer(status=None, problem="TimeoutError")
REFUSED = Answer(status=None, problem="ClientConnectorError", sent=False)
UNAVAILABLE = Answer(status=503, body={"error": {"code": "unavailable"}}, problem="unavailable")
CREATED = Answer(status=201, body={})


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def record(clock: Clock) -> Unanswered:
    return Unanswered(clock=clock)


def test_a_bank_without_answer_is_avoided_then_tried_by_one_request_at_a_time(
    clock: Clock, record: Unanswered
) -> None:
    record.heard("beta", "beta", TIMEOUT)
    assert not record.answers("beta") and record.avoided() == ["beta"]
    assert record.answers("alfa") and record.reaches("alfa", "gama")
    assert not record.reaches("alfa", "beta")  # no request forwarded to it either
    clock.now += AVOID_S
    assert record.answers("beta")  # time to try it again
    record.take("beta", "beta", for_s=SILENT_AFTER_S)  # this request is the try...
    assert not record.answers("beta")  # ...and the other clients keep off it meanwhile
    record.heard("beta", "beta", TIMEOUT)  # still nothing: avoided again, for AVOID_S
    clock.now += AVOID_S - 0.01
    assert not record.answers("beta")
    clock.now += 0.01
    record.take("beta", "beta", for_s=SILENT_AFTER_S)
    record.heard("beta", "beta", Answer(status=409, problem="insufficient_funds"))
    assert record.answers("beta") and record.avoided() == []  # any answer: it is back


def test_a_try_whose_answer_never_comes_frees_the_bank_after_its_bound(
    clock: Clock, record: Unanswered
) -> None:
    record.heard("beta", "beta", TIMEOUT)
    clock.now += AVOID_S
    record.take("beta", "beta", for_s=2.0)
    clock.now += 1.99
    assert not record.answers("beta")
    clock.now += 0.01
    assert record.answers("beta")


def test_taking_a_route_that_is_not_avoided_changes_nothing(
    clock: Clock, record: Unanswered
) -> None:
    record.take("alfa", "beta", for_s=SILENT_AFTER_S)
    assert record.reaches("alfa", "beta") and record.reaches("beta", "alfa")
    record.heard("gama", "gama", TIMEOUT)
    record.take("alfa", "alfa", for_s=SILENT_AFTER_S)  # another bank's mark is untouched
    assert not record.answers("gama")


def test_a_refused_connection_marks_the_terminal_even_for_a_forwarded_request(
    record: Unanswered,
) -> None:
    record.heard("beta", "alfa", REFUSED)  # a deposit at beta for an account at alfa
    assert not record.answers("beta")
    assert record.answers("alfa") and record.reaches("alfa", "gama")


@pytest.mark.parametrize("answer", [TIMEOUT, UNAVAILABLE], ids=["timeout", "503"])
def test_a_forwarded_request_without_answer_marks_the_link_both_ways_not_the_banks(
    clock: Clock, record: Unanswered, answer: Answer
) -> None:
    """In a partition clients reach every bank: the terminal is fine, the link is not."""
    record.heard("gama", "alfa", answer)
    assert record.answers("gama") and record.answers("alfa")
    assert not record.reaches("gama", "alfa") and not record.reaches("alfa", "gama")
    assert record.reaches("alfa", "alfa") and record.reaches("gama", "gama")  # not forwarded
    assert record.reaches("beta", "alfa") and record.reaches("gama", "beta")
    assert record.avoided() == []
    clock.now += AVOID_S
    assert record.reaches("gama", "alfa")


def test_an_answer_through_a_link_clears_it_and_both_banks(
    clock: Clock, record: Unanswered
) -> None:
    record.heard("gama", "alfa", TIMEOUT)
    record.heard("alfa", "alfa", TIMEOUT)
    clock.now += AVOID_S
    record.take("gama", "alfa", for_s=SILENT_AFTER_S)
    assert not record.reaches("beta", "alfa")  # alfa is being tried: others keep off it
    record.heard("gama", "alfa", CREATED)
    assert record.reaches("gama", "alfa") and record.answers("alfa")


def test_a_503_from_the_terminal_itself_is_an_answer(record: Unanswered) -> None:
    record.heard("alfa", "alfa", TIMEOUT)
    record.heard("alfa", "alfa", UNAVAILABLE)  # busy, but there
    assert record.answers("alfa")


def test_a_refusal_before_forwarding_does_not_clear_the_link(
    clock: Clock, record: Unanswered
) -> None:
    record.heard("gama", "alfa", TIMEOUT)
    clock.now += AVOID_S
    record.take("gama", "alfa", for_s=SILENT_AFTER_S)
    record.heard("gama", "alfa", Answer(status=422, problem="invalid"))
    assert not record.reaches("gama", "alfa")  # the terminal answered, the link is unproven


def test_the_watchers_status_marks_and_clears_a_bank_but_not_its_links(
    clock: Clock, record: Unanswered
) -> None:
    record.status("beta", answered=False)
    assert not record.answers("beta")
    clock.now += AVOID_S / 2
    record.status("beta", answered=False)  # each silent sample renews it
    clock.now += AVOID_S * 0.9
    assert not record.answers("beta")
    record.status("beta", answered=True)
    assert record.answers("beta") and record.avoided() == []
    record.status("beta", answered=False)
    clock.now += AVOID_S
    assert record.answers("beta")  # no news from the watcher for that long: tried again
    # What the clients found is theirs: a bank whose status answers may still not serve them.
    record.heard("alfa", "gama", TIMEOUT)
    record.heard("beta", "beta", TIMEOUT)
    for bank in BANKS:
        record.status(bank, answered=True)
    assert not record.reaches("alfa", "gama") and not record.answers("beta")
    assert record.reaches("gama", "gama") and record.reaches("alfa", "alfa")


def test_a_member_a_bank_says_is_down_cuts_the_link_between_them_for_a_while(
    clock: Clock, record: Unanswered
) -> None:
    """A partition: gama, cut off, says alfa and beta are down; both still answer clients."""
    record.status("gama", answered=True, down=["alfa", "beta", "gama"])
    assert not record.reaches("alfa", "gama") and not record.reaches("gama", "beta")
    assert record.reaches("alfa", "beta") and record.reaches("gama", "gama")
    assert record.avoided() == []
    clock.now += AVOID_S * 0.9
    record.status("alfa", answered=True, down=["gama"])  # renewed from the other side
    clock.now += AVOID_S * 0.2
    assert not record.reaches("gama", "alfa") and record.reaches("gama", "beta")
    clock.now += AVOID_S
    assert record.reaches("gama", "alfa")


def test_a_transfer_id_names_the_bank_that_decides_it() -> None:
    banks = ["alfa", "banco-dois", "gama"]
    assert transfer_home("alfa-0191a2b3c4d5e6f708090a0b0c0d0e", banks) == "alfa"
    assert transfer_home("banco-dois-0191a2b3c4d5e6f708090a0b0c0d0e", banks) == "banco-dois"
    assert transfer_home("t17", banks) is None  # the fake consortium's ids name no bank
    assert transfer_home("delta-0191a2b3c4d5", banks) is None


# --- the workload against the fake consortium ------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeConsortium, dict[str, str]]]:
    ports = dict(zip(BANKS, free_ports(len(BANKS)), strict=True))
    consortium = FakeConsortium(BANKS)
    stop = await serve(consortium, ports)
    try:
        yield consortium, {bank: f"http://127.0.0.1:{port}" for bank, port in ports.items()}
    finally:
        consortium.stopped.clear()  # requests still waiting at a stopped bank end now
        await stop()


def _by_client(operations: list[Operation]) -> dict[int, list[Operation]]:
    by_client: dict[int, list[Operation]] = defaultdict(list)
    for op in sorted(operations, key=lambda op: op.invoke_ms):
        by_client[op.client].append(op)
    return by_client


@pytest.mark.parametrize("watched", [True, False], ids=["watched", "unwatched"])
async def test_clients_that_keep_going_work_around_a_bank_that_stopped_answering(
    fake: tuple[FakeConsortium, dict[str, str]], watched: bool
) -> None:
    """beta stops answering as the load begins. Without the record and the patience, every
    client ends up waiting on it; with them, the load goes on at alfa and gama, and beta gets
    only the requests sent before it was found silent (by the ring's watcher, as the scenarios
    wire it, or else by the clients' own calls left unanswered) and a try now and then."""
    consortium, urls = fake
    recorder = Recorder()
    options = WorkloadOptions(clients=4, duration_s=2.0, audits=False, keep_going=True)
    stopped_ms: list[float] = []

    def progress(phase: str) -> None:
        if phase == "load":
            consortium.stopped.add("beta")
            stopped_ms.append(recorder.now_ms())
            # Resumed as the load ends: what still waits there is answered, as after SIGCONT.
            asyncio.get_running_loop().call_later(
                options.duration_s, consortium.stopped.discard, "beta"
            )

    async with ApiClient() as client:
        teller = Teller(client, urls, recorder, prefix="stopped")
        monitor = RingMonitor(client, urls, recorder.now_ms)
        if watched:  # as scenarios.driver wires it
            monitor.listeners.append(
                lambda s: teller.unanswered.status(
                    s.bank, s.up, [m for m, state in s.members.items() if state == "down"]
                )
            )
            await monitor.start()
        try:
            await run_bank_workload(teller, BANKS, options, random.Random(3), progress=progress)
        finally:
            await monitor.stop()
    load = [op for op in recorder.operations.values() if op.invoke_ms >= stopped_ms[0]]
    answered = [op for op in load if op.complete_ms is not None]
    assert len(answered) >= 100, len(answered)
    # Sent to beta, or to a bank that forwards it there (the account's bank for cash, the
    # first source's for a transfer).
    to_beta = [op for op in load if "beta" in (op.bank, (op.debits + op.credits)[0].account.bank)]
    if watched:
        # Known once a status call to beta timed out, and told again with each silent sample.
        known_ms = stopped_ms[0] + (STATUS_TIMEOUT_S + 0.2) * 1000
        late = [op.key for op in to_beta if op.invoke_ms > known_ms]
        assert len(late) <= 1, late
    # Those held up at beta were answered once it resumed (their calls still waited): a bank
    # taken for silent leaves no operation unknown that would have ended anyway.
    assert not [op.key for op in load if op.outcome is Outcome.UNKNOWN]
    # Transfers still draw destinations at beta: operations touching it still happen.
    assert any(
        m.account.bank == "beta" for op in answered if op.kind == "transfer" for m in op.credits
    )
    # A client went on while an operation of its own was under way.
    assert any(
        later.invoke_ms < (earlier.complete_ms or float("inf"))
        for ops in _by_client(load).values()
        for earlier, later in zip(ops, ops[1:], strict=False)
    )


async def test_without_keep_going_each_client_waits_for_every_operation(
    fake: tuple[FakeConsortium, dict[str, str]],
) -> None:
    """The closed loop ``bank-workload`` and ``scale`` measure: one operation at a time."""
    _, urls = fake
    recorder = Recorder()
    options = WorkloadOptions(clients=3, duration_s=0.5, audits=False)
    started_ms: list[float] = []

    def progress(phase: str) -> None:
        if phase == "load":
            started_ms.append(recorder.now_ms())

    async with ApiClient() as client:
        teller = Teller(client, urls, recorder, prefix="closed")
        await run_bank_workload(teller, BANKS, options, random.Random(4), progress=progress)
    load = [op for op in recorder.operations.values() if op.invoke_ms >= started_ms[0]]
    by_client = _by_client(load)
    assert sum(map(len, by_client.values())) > 3 * len(BANKS)
    for ops in by_client.values():
        for earlier, later in zip(ops, ops[1:], strict=False):
            assert earlier.complete_ms is not None and earlier.complete_ms <= later.invoke_ms
