"""The transfer service: the thin async driver that runs the pure protocol inside a real bank.

Place in the design: ``bank.interbank`` (HTTP) and the ring (``ring.holding()``) call this;
it feeds the pure :class:`~bank.transfers.coordinator.Coordinator` and
:class:`~bank.transfers.participant.Participant`, executes the book operations they yield on the
ledger (:class:`~bank.transfers.store.LedgerBook`), and carries their messages over signed HTTP.
It makes no protocol decision of its own; it only owns time (one timer task), concurrency
(participant steps naming a common transfer run one after the other; coordinator steps may
overlap) and the network (bounded timeouts,
bounded sends in flight; a failed send is simply lost and the protocol's retries cover it).

A round starts while this bank holds the token (``async with ring.holding()``, entered by
one runner task whenever transfers are pending, so a transfer submitted during an idle visit
goes out in that same visit): prepares go out to every other bank involved at once and the
token goes on. The round ends when every vote is in or at its deadline; its decisions are
made durable (this bank's own legs move in that same write), then waiting clients hear of
them and the decisions travel in the background, retried by the coordinator's timer until
acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog

from bank.ledger import Ledger
from bank.transfers.book import Steps
from bank.transfers.coordinator import PENDING_TRANSFERS_MAX, UNREACHABLE, Coordinator, Decided
from bank.transfers.participant import Participant
from bank.transfers.protocol import (
    Acks,
    DecisionQuery,
    Decisions,
    Message,
    Prepare,
    Transfer,
    Vote,
    Votes,
    decode_message,
    encode_message,
)
from bank.transfers import store
from bank.transfers.store import LedgerBook
from tokenring.config import RingConfig
from tokenring.core import Fence
from tokenring.logs import Throttle
from tokenring.ring import RingClosed
from tokenring.signing import SendFailed, SignedClient

__all__ = [
    "ROUND_MS_MIN",
    "SEND_TIMEOUT_S",
    "SUCCESSOR_VOTE_WAIT_MS",
    "RUNNER_IDLE_S_MAX",
    "SENDS_IN_FLIGHT_MAX",
    "Backlogged",
    "TransferService",
    "fence_from_json",
    "fence_to_json",
]

log = structlog.get_logger("bank.transfers")

ROUND_MS_MIN = 1_000
"""How long a round waits for votes after its token visit began. The token does not wait for
them: a durable prepare on a busy machine takes longer than ``hold_max_ms``, and safety never
rests on the token's deadline (holds keep the money, fences order the prepares). A bank that
refuses the connection votes no at once; only a silent one makes a round wait this long."""
SUCCESSOR_VOTE_WAIT_MS = 50
"""How long a visit waits for the vote of the bank after it in the ring (when that bank takes
part in the round) before the token goes on regardless; never more than half a visit."""
SEND_TIMEOUT_S = 2.0
"""How long one inter-bank request may take before it counts as lost."""
SENDS_IN_FLIGHT_MAX = 64
"""Background inter-bank requests (decisions, queries) in flight at once."""
ROUND_RETRY_S = 0.1
"""The pause after a round, or a step of the timer, failed unexpectedly, before trying again."""
FAILURE_LOG_INTERVAL_S = 10.0
"""A step that fails (its write refused: a full disk) is logged at most once this often, with
how many failed like it meanwhile: it would fail at every token visit."""
TIMER_IDLE_S_MAX = 1.0
"""The longest the timer task sleeps when nothing is due (it is woken earlier on work)."""
STOP_PASSES_MAX = 8
"""How many times :meth:`TransferService.stop` cancels and awaits what is still running: a
task may have started another one while it was being cancelled."""
RUNNER_IDLE_S_MAX = 1.0
"""The longest the round runner waits before it looks at the queue again though nobody woke
it. Every path that queues a transfer wakes it; this bounds what a missed wake-up could cost."""

PATHS = {
    Prepare: "/interbank/prepare",
    Decisions: "/interbank/decisions",
    DecisionQuery: "/interbank/query",
    Acks: "/interbank/acks",
}
"""Where each message is posted; the answer's body is the reply message (or nothing)."""


def fence_to_json(fence: Any) -> Any:
    """A ring fence as JSON."""
    assert isinstance(fence, Fence)
    return fence.to_dict()


def fence_from_json(data: Any) -> Fence:
    """A ring fence from JSON; ValueError when malformed."""
    return Fence.from_dict(data)


class KeyedLock:
    """Mutual exclusion per key: a holder of some keys excludes holders of any of them.
    All of a holder's keys are taken at once, so two holders never deadlock."""

    def __init__(self) -> None:
        self._busy: set[str] = set()
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def holding(self, keys: set[str]) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self._busy.isdisjoint(keys))
            self._busy |= keys
        try:
            yield
        finally:
            async with self._changed:
                self._busy -= keys
                self._changed.notify_all()


class Backlogged(Exception):
    """Too many transfers wait for the token here; the client should retry later."""


class TransferService:
    """One bank's coordinator and participant, driven over its ledger and the ring."""

    def __init__(
        self,
        config: RingConfig,
        bank_id: str,
        ledger: Ledger,
        *,
        client: Callable[[], SignedClient],
        holding: Callable[[], AbstractAsyncContextManager[Fence]] | None = None,
        fence_seen: Callable[[], Fence | None] = lambda: None,
        want: Callable[[], None] = lambda: None,
        round_ms_min: int = ROUND_MS_MIN,
        successor_vote_wait_ms: int = SUCCESSOR_VOTE_WAIT_MS,
        send_timeout_s: float = SEND_TIMEOUT_S,
        sends_in_flight_max: int = SENDS_IN_FLIGHT_MAX,
        pending_transfers_max: int = PENDING_TRANSFERS_MAX,
    ) -> None:
        self.config = config
        self.bank = bank_id
        self.ledger = ledger
        self.book = LedgerBook(ledger)
        self.participant = Participant(bank_id)
        self.coordinator = Coordinator(bank_id)
        self._client = client
        self._holding = holding
        self._fence_seen = fence_seen
        self._want = want
        self.rounds_paused = False
        """While True the runner takes no token visit (tests use it to play a paused holder)."""
        self.round_ms_min = round_ms_min
        self.successor_vote_wait_ms = successor_vote_wait_ms
        self.runner_idle_s = RUNNER_IDLE_S_MAX
        self.send_timeout_s = send_timeout_s
        self.pending_transfers_max = pending_transfers_max
        self._participant_lock = KeyedLock()
        # Submissions of one idempotency key take turns (see submit).
        self._key_lock = KeyedLock()
        self._sends = asyncio.Semaphore(sends_in_flight_max)
        # Made inside the loop it serves, and kept: asyncio.get_running_loop() costs a
        # getpid() system call per call on Python 3.11.
        self._loop = asyncio.get_running_loop()
        self._waiters: dict[str, list[asyncio.Future[Decided]]] = {}
        # Who waits for a decision of this bank's to reach every bank (wait_delivered).
        self._delivery_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._releasing = False
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._work = asyncio.Event()
        self._started = False
        self.rounds = 0
        self._step_failures = Throttle(FAILURE_LOG_INTERVAL_S)
        self.committed = 0
        self.aborted = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the tables, reload the protocol's state, start the timer."""
        await self.book.open()
        self.ledger.keys_elsewhere = self._key_taken
        now = self._now_ms()
        await self._run(self.participant.start(now))
        sends = await self._run(self.coordinator.start(now))
        self._started = True
        self._dispatch(sends)
        self._timer = asyncio.get_running_loop().create_task(self._timer_loop())
        if self._holding is not None:
            self._runner = asyncio.get_running_loop().create_task(self._run_rounds())
        if self.coordinator.backlog:
            self._work.set()
        log.info(
            "transfers.started",
            bank=self.bank,
            pending=self.coordinator.backlog,
            undelivered=len(self.coordinator.deliveries),
            outstanding=len(self.participant.outstanding),
        )

    def _key_taken(self, conn: sqlite3.Connection, scope: str, key: str) -> bool:
        """Whether a cross-bank transfer of this bank took the key: reserved by the
        coordinator (in memory until it is stored, which is with its decision for a client
        that waits) or stored. Asked by the ledger's writer thread for a local keyed write
        (:attr:`bank.ledger.Ledger.keys_elsewhere`). The coordinator reserves a key on the
        event loop before it asks the writer anything about it, and lets go of it only
        once the writer stored it; a write queued before that reservation stores its key
        first, and then the transfer is refused it (:func:`bank.transfers.store._transfer_key`).
        So whichever comes first keeps the key. The membership test of a dict the event loop
        changes is one atomic operation."""
        return (scope, key) in self.coordinator.keys or store.transfer_key_taken(conn, scope, key)

    async def stop(self) -> None:
        """Cancel the timer and every background send, and wait for them. Nothing is sent
        after this: what was not delivered is sent again from the database at the next start."""
        self.ledger.keys_elsewhere = None
        self._started = False
        for _ in range(STOP_PASSES_MAX):
            tasks = [t for t in (*self._tasks, self._timer, self._runner) if t is not None and not t.done()]
            if not tasks:
                break
            for task in tasks:
                task.cancel()
            # Their endings are collected, not raised; a cancellation of this caller still is.
            await asyncio.gather(*tasks, return_exceptions=True)
        assert all(task.done() for task in self._tasks), "stop leaves no background task running"
        for futures in self._waiters.values():
            for future in futures:
                future.cancel()
        self._waiters.clear()

    def _now_ms(self) -> int:
        return int(self._loop.time() * 1000)

    async def _run(self, steps: Steps[Any]) -> Any:
        """Run a step's batches against the book; a batch that fails is raised inside the
        step (which may undo what it did in memory) and then here."""
        try:
            batch = next(steps)
            while True:
                try:
                    results = await self.book.execute(batch)
                except Exception as error:
                    batch = steps.throw(error)
                else:
                    batch = steps.send(results)
        except StopIteration as stop:
            return stop.value

    # -- the coordinator's side -------------------------------------------------------------

    async def submit(
        self,
        transfer: Transfer,
        *,
        idempotency: tuple[str, str, str] | None = None,
        request: Any = None,
        record: bool = True,
    ) -> str:
        """A new pending transfer; returns its id (an earlier transfer's when the idempotency
        key was used before). Raises :class:`Backlogged`.

        ``record``: durable on return. False: stored with its decision (its idempotency key
        too, kept in memory until then), for a caller that tells the client the id only with
        the outcome or after :meth:`ensure_recorded`."""
        self.check_room()
        # Submissions of one key take turns. The coordinator reserves a key for the new
        # transfer's id before its book says whether the key names a stored transfer, or
        # stores the new one: a submission meanwhile would be answered that id, which may
        # never exist (the book named an earlier transfer) or not be stored yet (its client
        # then hears "lost before it was stored; nothing moved"). Other submissions need no
        # lock: a transfer enters pending only once it is durable or its key is checked,
        # and a round takes pending ones synchronously.
        steps = self.coordinator.submit(
            transfer,
            idempotency=idempotency,
            request=request,
            record=record,
            submitted_at_ms=self.book.ledger.now_ms(),
        )
        if idempotency is None:
            transfer_id: str = await self._run(steps)
        else:
            async with self._key_lock.holding({f"{idempotency[0]}\n{idempotency[1]}"}):
                transfer_id = await self._run(steps)
        self._work.set()
        return transfer_id

    def check_room(self) -> None:
        """Raise :class:`Backlogged` when no more transfers may wait here."""
        if self.coordinator.backlog >= self.pending_transfers_max:
            raise Backlogged(f"{self.coordinator.backlog} transfers already wait here")

    async def ensure_recorded(self, transfer_id: str) -> bool:
        """Store a transfer submitted with ``record=False`` unless it is stored, before its
        client hears its id. False when this bank does not know it (then it moved no money)."""
        recorded: bool = await self._run(self.coordinator.record(transfer_id))
        return recorded

    def delivering(self, transfer_id: str) -> bool:
        """Whether a decision of this bank's is still on its way to a bank that must hear it
        (sent, or waiting to ride with a prepare, and not acknowledged yet)."""
        return transfer_id in self.coordinator.deliveries

    async def wait_delivered(self, transfer_id: str, timeout_s: float) -> bool:
        """Wait at most ``timeout_s`` until :meth:`delivering` is over; True when it is."""
        if not self.delivering(transfer_id):
            return True
        future: asyncio.Future[None] = self._loop.create_future()
        self._delivery_waiters.setdefault(transfer_id, []).append(future)
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return False
        finally:
            waiting = self._delivery_waiters.get(transfer_id, [])
            if future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._delivery_waiters[transfer_id]
        return True

    def _wake_delivered(self) -> None:
        """After a coordinator step (acknowledgements come in several ways): wake who waits
        for a decision that has now reached every bank."""
        if not self._delivery_waiters:
            return
        for transfer_id in [t for t in self._delivery_waiters if not self.delivering(t)]:
            for future in self._delivery_waiters.pop(transfer_id):
                if not future.done():
                    future.set_result(None)

    def watch(self, transfer_id: str) -> asyncio.Future[Decided]:
        """A future resolved when this bank decides ``transfer_id`` (while it runs)."""
        future: asyncio.Future[Decided] = self._loop.create_future()
        self._waiters.setdefault(transfer_id, []).append(future)
        return future

    def release_waiters(self) -> None:
        """The bank is stopping: every client waiting for a decision stops waiting now, and
        one that comes later does not wait (its transfer is stored pending and its id
        answered, to be decided after a restart), instead of being held until the server
        gives up on it."""
        self._releasing = True
        for futures in self._waiters.values():
            for future in futures:
                future.cancel()

    async def wait_watched(self, future: asyncio.Future[Decided], timeout_s: float) -> bool:
        """Wait at most ``timeout_s`` for a watched transfer's decision; True when it came.
        The future itself is not cancelled by the time running out or by the caller's
        cancellation (only by :meth:`release_waiters` and :meth:`stop`), and the wait costs
        one future and one timer: a bank's clients wait for their transfers this way by the
        thousand per second."""
        if future.done() or self._releasing:
            return future.done() and not future.cancelled()
        waiter = self._loop.create_future()

        def wake(_: Any = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        timer = self._loop.call_later(timeout_s, wake)
        future.add_done_callback(wake)
        try:
            await waiter
        finally:
            timer.cancel()
            future.remove_done_callback(wake)
        return future.done() and not future.cancelled()

    def unwatch(self, transfer_id: str, future: asyncio.Future[Decided]) -> None:
        futures = self._waiters.get(transfer_id)
        if futures and future in futures:
            futures.remove(future)
            if not futures:
                del self._waiters[transfer_id]

    def resume_rounds(self) -> None:
        """Take token visits again after ``rounds_paused`` (tests play a paused holder)."""
        self.rounds_paused = False
        self._work.set()

    async def _run_rounds(self) -> None:
        """Whenever transfers are pending: wait for the token, run one round under it."""
        assert self._holding is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.runner_idle_s):
                    await self._work.wait()
            if self.rounds_paused or not self.coordinator.backlog:
                self._work.clear()
                await asyncio.sleep(0.05 if self.rounds_paused else 0)
                continue
            try:
                async with self._holding() as fence:
                    loop = asyncio.get_running_loop()
                    # The ring ends the visit at its own deadline; the round keeps at least
                    # round_ms_min (see ROUND_MS_MIN) and is fenced either way.
                    await self.run_round(fence, loop.time())
                    if self.coordinator.backlog:
                        # More arrived during the visit: the token carries this want round
                        # the ring (no demand message to every bank).
                        self._want()
            except RingClosed:
                log.info("transfers.rounds_stopped", reason="this bank left the ring")
                return
            except Exception:
                log.exception("transfers.round_failed")
                await asyncio.sleep(ROUND_RETRY_S)

    async def run_round(self, fence: Fence, deadline: float) -> bool:
        """Start one round under ``fence`` (the token held now); False when nothing was
        pending. The prepares are on their way when this returns: the token goes on at once
        and the round ends when its votes are in, or ``round_ms_min`` after ``deadline``."""
        if not self._started:
            return False
        loop = asyncio.get_running_loop()
        now_ms = self._now_ms()
        until_ms = max(int(deadline * 1000), now_ms) + self.round_ms_min
        sends = self.coordinator.grant(fence, until_ms, now_ms)
        if not sends:
            return False
        self.rounds += 1
        successor = self._successor()
        first: asyncio.Task[None] | None = None
        for to, message in sends:
            assert isinstance(message, Prepare)
            # Not through the bounded background sends: a round's prepares must not queue
            # behind retries, and each one ends with its round (its timeout is the deadline).
            task = loop.create_task(self._prepare_at(to, message, until_ms))
            self._track(task)
            if to == successor:
                first = task
        self._track(loop.create_task(self._expire_at(until_ms)))
        if first is not None:
            # The token's next holder would otherwise prepare under its newer fence before
            # our prepare reaches it, and refuse ours as stale: let ours be handled there
            # first (boundedly). Other banks are further away than our prepare.
            # Within the visit: the ring takes the token away at hold_max_ms regardless.
            wait_ms = min(self.successor_vote_wait_ms, self.config.token.hold_max_ms // 2)
            waiting_since = time.perf_counter()  # the loop's clock may tick in whole ms (uvloop)
            await asyncio.wait([first], timeout=wait_ms / 1000)
            successor_wait_ms: float | None = round((time.perf_counter() - waiting_since) * 1000, 1)
        else:
            successor_wait_ms = None
            await asyncio.sleep(0)  # let the prepares start on their way before the token
        # One line per round: its size and its banks.
        log.info(
            "transfers.round",
            bank=self.bank,
            fence=str(fence),
            transfers=sum(len(m.items) for _, m in sends if isinstance(m, Prepare)),
            banks=len(sends),
            backlog=self.coordinator.backlog,
            rounds_in_flight=len(self.coordinator.rounds),
            # How long the token stayed for the successor's vote (None: it takes no part).
            successor_wait_ms=successor_wait_ms,
        )
        return True

    def _successor(self) -> str:
        """The next bank in ring order (the token's likely next holder)."""
        members = list(self.config.member_ids)
        return members[(members.index(self.bank) + 1) % len(members)]

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire_at(self, until_ms: int) -> None:
        """At a round's deadline, votes still missing count as no."""
        await asyncio.sleep(max(until_ms - self._now_ms(), 0) / 1000)
        await self._coordinator_step(self.coordinator.expire(self._now_ms()))

    async def _prepare_at(self, to: str, prepare: Prepare, until_ms: int) -> None:
        """Another bank's prepare (this bank's own legs are never prepared: they move with
        the decision), and its votes into the coordinator."""
        assert to != self.bank
        try:
            timeout_s = max(until_ms - self._now_ms(), 1) / 1000
            try:
                reply = await self._post(to, prepare, timeout_s=timeout_s)
            except SendFailed as error:
                # Unreachable (or silent until the deadline): its votes are no, now.
                log.info("transfers.prepare_lost", to=to, error=str(error))
                reply = Votes(to, prepare.fence, tuple(
                    Vote(item.transfer_id, False, UNREACHABLE) for item in prepare.items
                ))
            if not isinstance(reply, Votes):
                return  # counts as no at the round's deadline
            votes = reply
        except ValueError as error:
            log.info("transfers.prepare_lost", to=to, error=str(error))
            return
        except Exception:
            log.exception("transfers.prepare_failed", to=to)
            return
        await self._coordinator_step(self.coordinator.handle(votes, self._now_ms()))

    async def _coordinator_step(self, steps: Steps[tuple[list[Decided], list[Any]]]) -> None:
        """Run a coordinator step. Steps need no lock: each one finishes its changes to the
        coordinator before it yields (see bank.transfers.coordinator), so they may overlap.

        A step may put transfers back in the queue (refused only as stale, or a decision write
        that failed) while the runner waits for work, so the runner is woken for them here:
        nothing else may ever be submitted to wake it.

        A step runs in a background task (a round's votes, its deadline): a write that fails
        there is logged, and the coordinator has already put the round's transfers back."""
        try:
            decided, sends = await self._run(steps)
        except Exception:
            # A write that fails once fails at every visit (a full disk): a line per interval.
            left_out = self._step_failures.due()
            if left_out is not None:
                log.exception("transfers.step_failed", like_it_since_last=left_out)
            return
        finally:
            if self.coordinator.backlog:
                self._work.set()
        self._wake_delivered()  # a prepare's votes may acknowledge earlier decisions
        if decided:
            # Decisions for other banks wait (boundedly) for a prepare to ride with: the
            # timer must see their new due time.
            self._wake.set()
            for d in decided:
                if d.outcome == "committed":
                    self.committed += 1
                else:
                    self.aborted += 1
                for future in self._waiters.pop(d.transfer_id, []):
                    if not future.done():
                        future.set_result(d)
        self._dispatch(sends)

    async def handle_coordinator(self, message: Message) -> Message | None:
        """Acks and decision queries from participants; returns the reply, if any."""
        decided, sends = await self._run(self.coordinator.handle(message, self._now_ms()))
        assert not decided
        self._wake_delivered()
        if isinstance(message, DecisionQuery):
            for to, reply in sends:
                if to == message.sender:
                    assert isinstance(reply, Decisions)
                    presumed = [item.transfer_id for item in reply.items if not item.legs]
                    if presumed:
                        # Never stored here: an earlier run of this bank died before their
                        # decision (or they never were).
                        log.info(
                            "transfers.presumed_aborted",
                            to=to,
                            transfers=len(presumed),
                            first=presumed[0],
                        )
                    return reply
            return Decisions(self.bank, ())
        self._dispatch(sends)
        return None

    # -- the participant's side -------------------------------------------------------------

    async def handle_participant(self, message: Prepare | Decisions) -> Message:
        """Prepare -> Votes, Decisions -> Acks. Steps naming a common transfer run one after
        the other (a late prepare must not race its transfer's decision); others overlap."""
        # Decisions travel alone or with a prepare; they are applied either way.
        decided = message.items if isinstance(message, Decisions) else message.decisions
        ids = {item.transfer_id for item in (*message.items, *decided)}
        async with self._participant_lock.holding(ids):
            replies: list[Message] = await self._run(
                self.participant.handle(message, self._now_ms())
            )
        self._wake.set()
        assert len(replies) == 1
        reply = replies[0]
        if (
            isinstance(message, Prepare)
            and isinstance(reply, Votes)
            and reply.votes
            and reply.votes[0].reason == "stale_fence"
        ):
            log.info(
                "transfers.prepare_refused_stale",
                coordinator=message.sender,
                fence=str(message.fence),
                accepted=str(self.participant.fence),
            )
        return reply

    def refuse_stale(self, prepare: Prepare) -> bool:
        """True when this bank's ring has seen a newer generation of the token than the
        prepare's: its sender held a token that was lost and regenerated (it was paused or cut
        off past the loss timeout), so it may not move money here any more, even where no
        newer prepare has been seen yet. Within one generation, prepares are ordered by the
        participant's own highest accepted fence (a round may outlive its visit)."""
        seen = self._fence_seen()
        return seen is not None and seen.epoch > prepare.fence.epoch

    # -- the network ------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        if not self._started:
            # Stopping or stopped: a send started now would outlive stop() (and its
            # connection the event loop). The database keeps what it would have said.
            work.close()
            return

        async def bounded() -> None:
            async with self._sends:
                try:
                    await work
                except (SendFailed, ValueError) as error:
                    log.info("transfers.send_lost", error=str(error))
                except Exception:
                    log.exception("transfers.background_failed")

        task = self._loop.create_task(bounded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dispatch(self, sends: list[tuple[str, Message]]) -> None:
        for to, message in sends:
            self._spawn(self._deliver(to, message))
        if sends:
            self._wake.set()

    async def _deliver(self, to: str, message: Message) -> None:
        """A decision or a query, to another bank or to this one."""
        if isinstance(message, Decisions):
            acks: Message | None
            if to == self.bank:
                acks = await self.handle_participant(message)
            else:
                acks = await self._post(to, message)
            if isinstance(acks, Acks):
                await self.handle_coordinator(acks)
        elif isinstance(message, DecisionQuery):
            answer: Message | None
            if to == self.bank:
                answer = await self.handle_coordinator(message)
            else:
                answer = await self._post(to, message)
            if isinstance(answer, Decisions):
                # Only what was asked, of the bank asked: an answer cannot decide others.
                asked = set(message.transfer_ids)
                answer = Decisions(answer.sender, tuple(i for i in answer.items if i.transfer_id in asked))
            if isinstance(answer, Decisions) and answer.items:
                acks = await self.handle_participant(answer)
                if to == self.bank:
                    await self.handle_coordinator(acks)
                else:
                    await self._post(to, acks)
        else:
            raise AssertionError(f"not a background message: {message!r}")

    async def _post(
        self, to: str, message: Message, *, timeout_s: float | None = None
    ) -> Message | None:
        url = self.config.bank(to).url
        path = PATHS[type(message)]
        reply = await self._client().post_json(
            url,
            path,
            encode_message(message, fence_to_json),
            timeout_s=self.send_timeout_s if timeout_s is None else timeout_s,
        )
        if reply.status != 200 or not reply.body:
            if reply.status != 200:
                log.info("transfers.refused_by_peer", to=to, path=path, status=reply.status)
            return None
        answer = decode_message(reply.body, fence_from_json)
        if answer.sender != to:
            log.warning("transfers.reply_from_wrong_sender", to=to, sender=answer.sender)
            return None
        return answer

    # -- time ----------------------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        """Re-send undelivered decisions and ask about undecided yes votes, when due."""
        while True:
            now = self._now_ms()
            due = [
                t
                for t in (self.coordinator.next_resend_ms(), self.participant.next_deadline_ms())
                if t is not None
            ]
            wait_s = TIMER_IDLE_S_MAX if not due else max(0.0, (min(due) - now) / 1000)
            self._wake.clear()
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(wait_s, TIMER_IDLE_S_MAX)):
                        await self._wake.wait()
                continue
            now = self._now_ms()
            try:
                _, sends = self.coordinator.tick(now)
                self._dispatch(sends)
                if self.coordinator.acks_due and self.coordinator.acks_due_ms <= now:
                    # No lock: the step takes the acknowledgements synchronously, then
                    # writes. Should the write fail they are forgotten: an acknowledgement
                    # lost costs a repeated decision after a restart, never money.
                    await self._run(self.coordinator.flush_acks())
                self._dispatch(self.participant.tick(now))
            except Exception:
                # The timer is what re-sends decisions and asks about undecided votes: it
                # must outlive a failed write (a full disk, say), or nothing would again.
                log.exception("transfers.timer_failed")
                await asyncio.sleep(ROUND_RETRY_S)
                continue
            # Nothing else is due before the next deadline; a woken wait re-reads it.
            await asyncio.sleep(0)
