"""tokenring: token-ring mutual exclusion for asyncio programs.

The layers, from the inside out: ``tokenring.core`` (a pure state machine: no I/O, no clock),
``tokenring.simulation`` (many cores on a virtual clock and a seeded, faulty network),
``tokenring.transport`` (aiohttp: signed messages and one timer) and the ``Ring`` face
(``async with ring.holding() as fence``). ``tokenring.config`` reads ``ring.toml``.
"""

from tokenring.config import ConfigError, RingConfig, load
from tokenring.core import Fence, Member
from tokenring.ring import Ring, RingClosed

__all__ = ["ConfigError", "Fence", "Member", "Ring", "RingClosed", "RingConfig", "load"]
