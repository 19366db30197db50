"""tokenring: token-ring mutual exclusion for asyncio programs.

The layers, from the inside out: ``tokenring.core`` (a pure state machine: no I/O, no clock),
``tokenring.simulation`` (many cores on a virtual clock and a seeded, faulty network),
``tokenring.transport`` (aiohttp: signed messages and one timer) and the ``Ring`` face
(``async with ring.holding() as fence``). ``tokenring.config`` reads ``ring.toml``.
"""

__all__: list[str] = []
