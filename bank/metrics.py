"""A bank's own figures in ``GET /metrics``, beside the ring member's.

:class:`BankCollector` is registered in the ring member's registry (see
:mod:`tokenring.metrics`) and reads, at each scrape, the counters the ledger and the transfer
service keep anyway: nothing is counted twice and nothing is counted on the hot path.

- ``bank_ledger_commits_total``: transactions the ledger's writer committed (group commits;
  each one is an ``fsync``).
- ``bank_ledger_writes_total``: writer jobs in them (a job is one operation or one batch of
  the transfer book).
- ``bank_ledger_write_failures_total``: writer transactions that failed whole (a full disk,
  an I/O error): their callers were told, and nothing of them was kept.
- ``bank_log_lines_dropped_total``: log lines that could not be written (a full disk); the
  bank goes on without them.
- ``bank_transfer_rounds_total``: rounds this bank ran as the token's holder.
- ``bank_transfers_decided_total{outcome}``: cross-bank transfers this bank coordinated and
  decided since it started, by outcome (``committed``, ``aborted``).
- ``bank_transfers_pending``: transfers recorded here and waiting for a round.
- ``bank_transfer_decisions_owed{bank}``: decisions of transfers this bank coordinated that
  another bank has not acknowledged yet, by that bank. Under load a few rounds' worth; one
  that stays up names a bank that is down or cut off (bounded by what it voted on before: an
  abort is not owed to a bank whose vote never came).
- ``bank_transfer_votes_outstanding``: transfers this bank holds money for, having voted
  yes, whose decision has not come yet (it asks their coordinators).
- ``bank_signed_requests_sent_total{path}``: requests this bank sent to other members (token
  hand-offs, demand, prepares, decisions, listings), by path, answered or not.

The counters restart at zero with the process, as Prometheus expects of counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bank.keys import LEDGER, RING, TRANSFERS
from tokenring import logs
from tokenring.ring import RingClosed

__all__ = ["BankCollector"]


class BankCollector(Collector):
    """The ledger's and the transfer service's counters of the bank serving ``app``."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        ledger: Any = self._app.get(LEDGER)
        service: Any = self._app.get(TRANSFERS)
        ring: Any = self._app.get(RING)
        try:
            counts: dict[str, int] = dict(ring.client.sent) if ring is not None else {}
        except RingClosed:  # not started yet, or stopped
            counts = {}
        if counts:
            sent = CounterMetricFamily(
                "bank_signed_requests_sent",
                "Signed requests sent to other members, by path.",
                labels=["path"],
            )
            for path, count in sorted(counts.items()):
                sent.add_metric([path], count)
            yield sent
        if ledger is not None:  # absent until the application has started
            yield CounterMetricFamily(
                "bank_ledger_commits", "Transactions committed by the ledger's writer.",
                value=ledger.batches,
            )
            yield CounterMetricFamily(
                "bank_ledger_writes", "Writer jobs committed (or refused) in those transactions.",
                value=ledger.operations,
            )
            yield CounterMetricFamily(
                "bank_ledger_write_failures",
                "Writer transactions that failed whole (a full disk, an I/O error); nothing of them is kept.",
                value=ledger.batch_failures,
            )
        yield CounterMetricFamily(
            "bank_log_lines_dropped", "Log lines that could not be written (a full disk, a closed stream).",
            value=logs.lines_dropped(),
        )
        if service is not None:
            yield CounterMetricFamily(
                "bank_transfer_rounds", "Rounds run by this bank as the token's holder.",
                value=service.rounds,
            )
            decided = CounterMetricFamily(
                "bank_transfers_decided",
                "Cross-bank transfers coordinated here and decided, by outcome.",
                labels=["outcome"],
            )
            decided.add_metric(["committed"], service.committed)
            decided.add_metric(["aborted"], service.aborted)
            yield decided
            yield GaugeMetricFamily(
                "bank_transfers_pending", "Transfers recorded here and waiting for a round.",
                value=service.coordinator.backlog,
            )
            owed = GaugeMetricFamily(
                "bank_transfer_decisions_owed",
                "Decisions coordinated here that another bank has not acknowledged, by bank.",
                labels=["bank"],
            )
            for bank, transfer_ids in sorted(service.coordinator.owed.items()):
                owed.add_metric([bank], len(transfer_ids))
            yield owed
            yield GaugeMetricFamily(
                "bank_transfer_votes_outstanding",
                "Transfers this bank voted yes on and holds money for, with no decision yet.",
                value=len(service.participant.outstanding),
            )
