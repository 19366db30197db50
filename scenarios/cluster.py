"""The ring a scenario runs against: one it starts itself, or one already running.

:class:`LocalRing` writes a temporary ring file (random free 127.0.0.1 ports, a temporary
data_dir, small timeouts), starts every bank as its own process with ``consortium bank`` (the
public command), and controls only those processes: SIGKILL, SIGSTOP / SIGCONT, restart.
With ``proxies=True`` every bank gets its own ring file in which each other member's url is a
:class:`scenarios.proxy.LinkProxy` forwarding to that member, so that inter-bank traffic can
be cut per link (``partition``/``heal``); clients still reach each bank directly.

:class:`AttachedRing` is a ring of ``-c ring.toml`` someone else started: scenarios may load
it but never signal its processes, and fault scenarios refuse it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bank.process import ENV_PARENT_PID, free_ports
from scenarios.client import ApiClient
from scenarios.proxy import LinkProxy
from tokenring.config import RingConfig, load

__all__ = [
    "BANK_IDS",
    "AttachedRing",
    "LocalRing",
    "Ring",
    "ScenarioError",
]

BANK_IDS = (
    "alfa", "beta", "gama", "delta", "eco", "foxtrot", "golf", "hotel",
    "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
)  # fmt: skip
"""Ids of the banks a started ring has, in ring order; the ring uses the first N."""
START_TIMEOUT_S = 30.0
"""The longest the ring's banks take to answer /healthz after they are started."""
STOP_TIMEOUT_S = 5.0
"""How long a bank gets to stop on SIGTERM before it is killed."""
HEALTH_POLL_MS = 50
LOG_TAIL_BYTES = 2000
SECRET_ENV = "CONSORTIUM_SECRET"


class ScenarioError(Exception):
    """A scenario could not run (the ring would not start, --attach where it cannot be
    used...). ``str()`` is the line to show; it is not an invariant violation."""


class Ring:
    """What a scenario may do with a ring; faults need :attr:`controllable`."""

    config: RingConfig
    controllable: bool = False

    @property
    def member_ids(self) -> tuple[str, ...]:
        return self.config.member_ids

    def url(self, bank_id: str) -> str:
        """Where a customer reaches ``bank_id``."""
        return self.config.bank(bank_id).url

    def is_running(self, bank_id: str) -> bool:
        """Whether the bank should answer (not killed, not paused)."""
        return True

    async def kill(self, bank_id: str) -> None:
        raise ScenarioError("this ring was not started by the scenario: it cannot kill banks")

    async def pause(self, bank_id: str) -> None:
        raise ScenarioError("this ring was not started by the scenario: it cannot pause banks")

    async def resume(self, bank_id: str) -> None:
        raise ScenarioError("this ring was not started by the scenario: it cannot resume banks")

    async def restart(self, bank_id: str) -> None:
        raise ScenarioError("this ring was not started by the scenario: it cannot restart banks")

    def partition(self, groups: list[set[str]]) -> None:
        raise ScenarioError("partitions need a ring started with proxies between its banks")

    def heal(self) -> None:
        raise ScenarioError("partitions need a ring started with proxies between its banks")

    async def close(self) -> None:
        return None


ATTACH_PROBE_TIMEOUT_S = 3.0
"""How long ``--attach`` waits for each bank's /healthz before it calls the ring not running."""


class AttachedRing(Ring):
    """A running ring, read from its ring file; never signalled."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.config = load(path)

    async def check_running(self) -> None:
        """Refuse at once, naming where it looked, when no bank of the ring answers: a scenario
        against a ring that is not running would only fail later, less clearly. Some banks
        down is a state a scenario may well be meant to see. Refuse too when a bank runs with
        another ring file than this one: what the scenario expects (the banks, the timing
        bounds it judges recovery by) comes from this file."""
        async with ApiClient(call_timeout_s=ATTACH_PROBE_TIMEOUT_S) as client:
            answers = await asyncio.gather(
                *(client.call("GET", self.url(bank) + "/healthz") for bank in self.member_ids)
            )
            statuses = await asyncio.gather(
                *(client.call("GET", self.url(bank) + "/ring/status") for bank in self.member_ids)
            )
        if not any(answer.ok for answer in answers):
            where = ", ".join(f"{bank} at {self.url(bank)}" for bank in self.member_ids)
            raise ScenarioError(
                f"no bank of {self.path} answers ({where}): is the ring running? "
                f"Start it with 'make run' or 'consortium up -c {self.path}'"
            )
        for bank, status in zip(self.member_ids, statuses, strict=True):
            digest = status.body.get("config") if status.ok and isinstance(status.body, dict) else None
            if isinstance(digest, str) and digest != self.config.digest:
                raise ScenarioError(
                    f"{bank} runs with another ring file than {self.path} (its digest {digest}, "
                    f"this file's {self.config.digest}): attach with the file the ring was started with"
                )


class LocalRing(Ring):
    """A ring of bank processes this scenario starts, owns and stops."""

    controllable = True

    def __init__(
        self,
        banks: int,
        *,
        hold_max_ms: int = 25,
        handoff_timeout_ms: int = 150,
        loss_timeout_ms: int | None = 1000,
        proxies: bool = False,
        workdir: Path | None = None,
    ) -> None:
        assert 1 <= banks <= len(BANK_IDS), f"a started ring has 1 to {len(BANK_IDS)} banks"
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="consortium-scenario-"))
        self.secret = secrets.token_hex(16)
        self.hold_max_ms = hold_max_ms
        self.handoff_timeout_ms = handoff_timeout_ms
        self.loss_timeout_ms = loss_timeout_ms
        self.ids = BANK_IDS[:banks]
        # Bound together, so that no two banks are given the same port.
        self.ports = dict(zip(self.ids, free_ports(len(self.ids)), strict=True))
        self.proxies: dict[tuple[str, str], LinkProxy] = {}
        self.with_proxies = proxies
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.paused: set[str] = set()
        self._config_paths: dict[str, Path] = {}
        path = self._write_config("ring.toml", {})
        self.config = load(path)

    def _write_config(self, name: str, urls: dict[str, str]) -> Path:
        lines = [
            "# Written by `consortium scenario` for one run; removed when it ends.",
            "[consortium]",
            'name = "scenario"',
            f'secret_env = "{SECRET_ENV}"',
            f'data_dir = "{self.workdir / "data"}"',
            "",
            "[token]",
            f"hold_max_ms = {self.hold_max_ms}",
            f"handoff_timeout_ms = {self.handoff_timeout_ms}",
        ]
        if self.loss_timeout_ms is not None:
            lines.append(f"loss_timeout_ms = {self.loss_timeout_ms}")
        for bank_id in self.ids:
            url = urls.get(bank_id, f"http://127.0.0.1:{self.ports[bank_id]}")
            lines += ["", "[[banks]]", f'id = "{bank_id}"', f'name = "Banco {bank_id.title()}"']
            lines.append(f'url = "{url}"')
        path = self.workdir / name
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    async def start(self, *, start_timeout_s: float = START_TIMEOUT_S) -> None:
        """Start every bank and wait until each answers /healthz."""
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        if self.with_proxies:
            for source in self.ids:
                for target in self.ids:
                    if source == target:
                        continue
                    proxy = LinkProxy(f"{source}->{target}", "127.0.0.1", self.ports[target])
                    await proxy.start()
                    self.proxies[(source, target)] = proxy
            for source in self.ids:
                urls = {
                    target: f"http://127.0.0.1:{self.proxies[(source, target)].port}"
                    for target in self.ids
                    if target != source
                }
                self._config_paths[source] = self._write_config(f"ring-{source}.toml", urls)
        else:
            for bank_id in self.ids:
                self._config_paths[bank_id] = self.config.path
        for bank_id in self.ids:
            await self._spawn(bank_id)
        await asyncio.gather(
            *(self.wait_healthy(bank_id, timeout_s=start_timeout_s) for bank_id in self.ids)
        )

    async def _spawn(self, bank_id: str) -> None:
        env = dict(os.environ)
        env[SECRET_ENV] = self.secret
        # The bank stops by itself once this process is gone: a scenario killed outright
        # (SIGKILL, a crash) leaves no bank running for nobody.
        env[ENV_PARENT_PID] = str(os.getpid())
        log = open(self.workdir / f"{bank_id}.log", "ab")  # noqa: SIM115 (the child keeps it)
        try:
            self.processes[bank_id] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bank.cli",
                "bank",
                bank_id,
                "-c",
                str(self._config_paths[bank_id]),
                env=env,
                cwd=self.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            log.close()

    def log_tail(self, bank_id: str) -> str:
        path = self.workdir / f"{bank_id}.log"
        try:
            data = path.read_bytes()
        except OSError:
            return ""
        return data[-LOG_TAIL_BYTES:].decode(errors="replace")

    async def wait_healthy(self, bank_id: str, *, timeout_s: float = START_TIMEOUT_S) -> None:
        url = self.url(bank_id) + "/healthz"
        deadline = time.monotonic() + timeout_s
        async with ApiClient(call_timeout_s=1.0) as client:
            while time.monotonic() < deadline:
                process = self.processes[bank_id]
                if process.returncode is not None:
                    raise ScenarioError(
                        f"bank {bank_id} exited with status {process.returncode} while "
                        f"starting:\n{self.log_tail(bank_id)}"
                    )
                answer = await client.call("GET", url)
                if answer.status == 200:
                    return
                await asyncio.sleep(HEALTH_POLL_MS / 1000)
        raise ScenarioError(
            f"bank {bank_id} did not answer {url} within {timeout_s:.0f} s:\n"
            f"{self.log_tail(bank_id)}"
        )

    def is_running(self, bank_id: str) -> bool:
        process = self.processes.get(bank_id)
        return process is not None and process.returncode is None and bank_id not in self.paused

    async def kill(self, bank_id: str) -> None:
        process = self.processes[bank_id]
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()
        self.paused.discard(bank_id)

    async def pause(self, bank_id: str) -> None:
        process = self.processes[bank_id]
        assert process.returncode is None, f"{bank_id} is not running"
        process.send_signal(signal.SIGSTOP)
        self.paused.add(bank_id)

    async def resume(self, bank_id: str) -> None:
        process = self.processes[bank_id]
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)
        self.paused.discard(bank_id)

    async def restart(self, bank_id: str, *, start_timeout_s: float = START_TIMEOUT_S) -> None:
        """Start a killed bank again on the same port and database."""
        assert self.processes[bank_id].returncode is not None, "kill it before restarting"
        await self._spawn(bank_id)
        await self.wait_healthy(bank_id, timeout_s=start_timeout_s)

    def partition(self, groups: list[set[str]]) -> None:
        """Cut every link between members of different groups (both directions)."""
        if not self.with_proxies:
            super().partition(groups)
        group_of = {member: index for index, group in enumerate(groups) for member in group}
        assert set(group_of) == set(self.ids), "every member is in exactly one group"
        for (source, target), proxy in self.proxies.items():
            proxy.set_cut(group_of[source] != group_of[target])

    def heal(self) -> None:
        if not self.with_proxies:
            super().heal()
        for proxy in self.proxies.values():
            proxy.set_cut(False)

    async def close(self) -> None:
        """Stop every bank (SIGTERM, then SIGKILL after a bound) and remove the workdir."""
        for bank_id, process in self.processes.items():
            if process.returncode is None:
                if bank_id in self.paused:
                    process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await process.wait()
            except TimeoutError:
                process.send_signal(signal.SIGKILL)
                await process.wait()
        for proxy in self.proxies.values():
            await proxy.close()
        if self._own_workdir:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.workdir)
