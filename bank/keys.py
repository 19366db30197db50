"""The typed keys under which a bank's aiohttp application keeps its parts.

One place, so that the ring, the ledger, the client API, the inter-bank API and the web
terminal find each other without importing each other's modules.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tokenring.config import RingConfig
from tokenring.ring import Ring

__all__ = ["BANK_ID", "CONFIG", "LEDGER", "RING", "TRANSFERS"]

CONFIG = web.AppKey("config", RingConfig)
"""The whole ring.toml this bank was started with."""
BANK_ID = web.AppKey("bank_id", str)
"""This bank's id in the ring."""
RING = web.AppKey("ring", Ring)
"""This bank's ring member (``status()`` gives the /ring/status document)."""
LEDGER = web.AppKey("ledger", Any)
"""This bank's ledger (SQLite)."""
TRANSFERS = web.AppKey("transfers", Any)
"""The cross-bank transfer coordinator and participant."""
