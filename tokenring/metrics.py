"""Prometheus metrics of one ring member, in a registry of its own.

The :class:`~tokenring.ring.Ring` face turns the core's actions into calls on
:class:`RingMetrics`; an application serves ``metrics.registry`` (``GET /metrics`` in a bank)
and may register its own collectors in the same registry. A registry per member, not the
process-wide default, so that several members in one process (tests, the benchmark) do not
share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["HANDOFF_BUCKETS_S", "HOLD_BUCKETS_S", "RingMetrics"]

HOLD_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
HANDOFF_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class RingMetrics:
    """The counters, gauges and histograms of one member."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        r = self.registry
        self.token_visits = Counter(
            "tokenring_token_visits", "Times the token arrived at this member.", registry=r
        )
        self.hold_seconds = Histogram(
            "tokenring_hold_seconds",
            "How long this member kept the token per visit.",
            buckets=HOLD_BUCKETS_S,
            registry=r,
        )
        self.handoff_latency_seconds = Histogram(
            "tokenring_handoff_latency_seconds",
            "From sending the token to its acknowledgement by the successor.",
            buckets=HANDOFF_BUCKETS_S,
            registry=r,
        )
        self.claims_started = Counter(
            "tokenring_claims_started", "Claims for a new token started here.", registry=r
        )
        self.claims_won = Counter(
            "tokenring_claims_won", "Tokens of a new generation minted here.", registry=r
        )
        self.tokens_purged = Counter(
            "tokenring_tokens_purged",
            "Stale tokens discarded here, by reason.",
            ["reason"],
            registry=r,
        )
        self.members_down = Gauge(
            "tokenring_members_down", "Members this one currently sees as down.", registry=r
        )
        self.members_config_differs = Gauge(
            "tokenring_members_config_differs",
            "Members last seen with another ring file than this one's (see tokenring.agreement).",
            registry=r,
        )
        self.member_down_events = Counter(
            "tokenring_member_down_events", "Times this member marked another down.", registry=r
        )
        self.messages_received = Counter(
            "tokenring_messages_received",
            "Ring messages accepted by this member, by sender.",
            ["sender"],
            registry=r,
        )
        self.demands_sent = Counter(
            "tokenring_demands_sent",
            "Demand messages posted to the other members (one per member told).",
            registry=r,
        )
        self.sends_failed = Counter(
            "tokenring_sends_failed",
            "Ring messages that got no answer (lost; the core's timeouts handle it).",
            registry=r,
        )
        self.sends_dropped = Counter(
            "tokenring_sends_dropped",
            "Ring messages dropped because too many sends were in flight.",
            registry=r,
        )

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
