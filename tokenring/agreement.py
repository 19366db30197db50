"""Whether the other members run with the same ring file as this one.

Mutual exclusion assumes one ring: every member must see the same members in the same order
and the same token timings. A member started with another ``ring.toml`` (a member added on
one machine only, two urls swapped, another ``hold_max_ms``) still signs correctly and takes
part, with its own idea of successors and majorities. Money stays guarded by the fences and
by each participant's own checks, but nothing else would tell the operator.

So every signed request and every answer to one carries the sender's
:attr:`~tokenring.config.RingConfig.digest` in :data:`HEADER_CONFIG`, and the receiving
member compares it with its own (:meth:`ConfigAgreement.observe`). A difference is logged once
per member as a warning, ``ring.config_differs``, again only if that member's digest changes,
and ``ring.config_agrees`` when it agrees again. ``GET /ring/status`` shows this member's
digest and the members seen to differ.

The check is advisory on purpose. Refusing a member with another file (for instance by
signing the digest into every message) would make any change of the file, even a rolling
restart that adds a bank, stop the whole ring until every member has restarted. The header is
not covered by the signature; it is read only from messages whose signature was verified, so
only a member (or someone able to alter traffic between members, who could drop it anyway)
can make this member say that files differ.
"""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ["DIGEST_CHARS_MAX", "HEADER_CONFIG", "ConfigAgreement"]

HEADER_CONFIG = "X-Ring-Config"
"""The header that carries the sender's ring file digest."""
DIGEST_CHARS_MAX = 64
"""A longer header value is not a digest: it is ignored, and never logged whole."""


class ConfigAgreement:
    """What this member knows of the other members' ring files.

    ``members`` bounds what is kept: only their ids are remembered (a verified sender is
    always one of them), one digest each.
    """

    def __init__(self, digest: str, *, member_id: str, members: frozenset[str]) -> None:
        assert digest and len(digest) <= DIGEST_CHARS_MAX, digest
        self.digest = digest
        """This member's own digest, which it sends."""
        self._members = members
        self._differing: dict[str, str] = {}
        self._log = structlog.get_logger("tokenring.agreement").bind(bank=member_id)

    def observe(self, member: str, digest: str | None) -> None:
        """Note the digest ``member`` sent (``None``: it sent none, which says nothing)."""
        if digest is None or member not in self._members:
            return
        if digest == self.digest:
            if self._differing.pop(member, None) is not None:
                self._log.info("ring.config_agrees", member=member, config=self.digest)
            return
        if len(digest) > DIGEST_CHARS_MAX or not digest.isascii() or not digest.isalnum():
            return
        if self._differing.get(member) == digest:
            return
        self._differing[member] = digest
        self._log.warning(
            "ring.config_differs", member=member, theirs=digest, ours=self.digest,
            hint="that member runs with another ring file: every member needs the same banks, "
            "in the same order, with the same urls and token timings",
        )  # fmt: skip

    def differing(self) -> dict[str, str]:
        """The members last seen with another digest, and that digest."""
        return dict(self._differing)

    def status(self) -> dict[str, Any]:
        """This member's part of ``GET /ring/status``."""
        return {"config": self.digest, "config_differs": sorted(self._differing)}
