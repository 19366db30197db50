"""Bank processes on this machine: start, wait for, signal and stop ``consortium bank ID``.

``consortium up``, the real-process tests, the benchmark and the scenarios all start banks the
same way, through :class:`BankProcess` (one child) and :class:`Consortium` (every bank of a
ring file). A child runs ``python -m bank.cli bank ID -c FILE`` with the ring secret in its
environment and its output in a log file; stopping sends SIGTERM (the bank leaves the ring,
handing the token on) and, past a bound, SIGKILL, so that nothing is left behind.
:func:`write_ring_file` writes a ring file for banks on random free ports of 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp

from tokenring.config import RingConfig, load
from tokenring.core import Fence

__all__ = [
    "CATCH_ATTEMPTS_MAX",
    "HEALTH_POLL_S",
    "READY_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "BankProcess",
    "Consortium",
    "catch_holder",
    "fetch_statuses",
    "free_ports",
    "get_json",
    "write_ring_file",
]

READY_TIMEOUT_S = 20.0
"""How long a bank may take to answer ``/healthz`` after it was started (busy machines)."""
LOG_TAIL_BYTES = 8192
"""How much of the end of a bank's log says why it exited."""
STOP_TIMEOUT_S = 5.0
"""How long a bank may take to exit after SIGTERM before it is killed."""
HEALTH_POLL_S = 0.05
"""How often readiness is polled."""
HTTP_TIMEOUT_S = 2.0
"""The timeout of one plain HTTP request made here."""
ENV_PARENT_PID = "CONSORTIUM_PARENT_PID"
"""Set for the children of ``consortium up``, of a scenario and of the process tests: a bank
stops when that process goes away, so that none outlives what started it."""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free a moment ago (bound together, then closed)."""
    assert 0 < count <= 256, count
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def write_ring_file(
    path: Path,
    bank_ids: Sequence[str],
    *,
    hold_max_ms: int = 25,
    handoff_timeout_ms: int | None = None,
    loss_timeout_ms: int | None = None,
    secret_env: str = "CONSORTIUM_SECRET",
    data_dir: str = "var",
    name: str = "test",
    ports: Sequence[int] | None = None,
) -> RingConfig:
    """Write a ring file for ``bank_ids`` on 127.0.0.1 (random free ports) and load it."""
    ports = free_ports(len(bank_ids)) if ports is None else ports
    assert len(ports) == len(bank_ids)
    lines = [
        "[consortium]",
        f'name = "{name}"',
        f'secret_env = "{secret_env}"',
        f'data_dir = "{data_dir}"',
        "",
        "[token]",
        f"hold_max_ms = {hold_max_ms}",
    ]
    if handoff_timeout_ms is not None:
        lines.append(f"handoff_timeout_ms = {handoff_timeout_ms}")
    if loss_timeout_ms is not None:
        lines.append(f"loss_timeout_ms = {loss_timeout_ms}")
    for bank_id, port in zip(bank_ids, ports, strict=True):
        lines += [
            "",
            "[[banks]]",
            f'id = "{bank_id}"',
            f'name = "Bank {bank_id}"',
            f'url = "http://127.0.0.1:{port}"',
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load(path)


def get_json(url: str, *, timeout_s: float = HTTP_TIMEOUT_S) -> Any:
    """GET ``url`` and decode its JSON; ``None`` when it does not answer with 2xx JSON."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


class BankProcess:
    """One ``consortium bank ID`` child process."""

    def __init__(
        self,
        config: RingConfig,
        bank_id: str,
        *,
        env: Mapping[str, str],
        log_path: Path | None = None,
        parent_watch: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.bank = config.bank(bank_id)
        self.bank_id = bank_id
        self.env = dict(env)
        self.log_path = log_path
        self.parent_watch = parent_watch
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return self.bank.url

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the child (again, after it stopped or was killed)."""
        assert not self.alive(), f"{self.bank_id} is already running"
        env = dict(self.env)
        if self.parent_watch:
            env[ENV_PARENT_PID] = str(os.getpid())
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._close_log()
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (kept for the child's life)
            out: Any = self._log_file
        else:
            out = subprocess.DEVNULL
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bank.cli",
                "bank",
                self.bank_id,
                "-c",
                str(self.config.path),
                *self.extra_args,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C meant for the parent does not reach the banks, which
            # the parent then stops in order.
            start_new_session=True,
        )

    def healthy(self) -> bool:
        """Whether this child answers ``/healthz`` (not some other process at its address)."""
        answer = get_json(self.url + "/healthz", timeout_s=0.5)
        return isinstance(answer, dict) and self.process is not None and answer.get("pid") == self.process.pid

    def wait_ready(self, *, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until ``/healthz`` answers; ``RuntimeError`` if the child exits or is late."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"bank {self.bank_id} exited ({self.exit_note()})")
            if self.healthy():
                return
            time.sleep(HEALTH_POLL_S)
        raise RuntimeError(f"bank {self.bank_id} did not answer /healthz in {timeout_s} s")

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL and reap: a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self, *, timeout_s: float = STOP_TIMEOUT_S, signalled: bool = False) -> int | None:
        """SIGTERM (unless ``signalled``: already sent), wait at most ``timeout_s``, then
        SIGKILL; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            if not signalled:
                # A paused child cannot handle SIGTERM until it runs again.
                self.process.send_signal(signal.SIGCONT)
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        self._close_log()
        return self.process.returncode

    def status(self) -> Any:
        """This bank's ``GET /ring/status`` document, or ``None`` when it does not answer."""
        return get_json(self.url + "/ring/status")

    def exit_note(self) -> str:
        """How the child ended: its exit code and the last lines of its log."""
        assert self.process is not None
        code = self.process.returncode
        if code is not None and code < 0:
            # Killed by a signal: its log says nothing of why (it was not asked to stop).
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            note = f"killed by {name}"
            return note + (f"; its log: {self.log_path}" if self.log_path is not None else "")
        note = f"exit code {code}"
        if self.log_path is not None and self.log_path.exists():
            with open(self.log_path, "rb") as log:  # its end only: a log may be large
                log.seek(max(0, self.log_path.stat().st_size - LOG_TAIL_BYTES))
                tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
            # A bank that could not start says why in one line of its own (bank.cli).
            said = [line for line in tail if line.startswith("consortium: ")]
            note += f": {said[-1].removeprefix('consortium: ')}" if said else "; log: " + " | ".join(tail)
        return note

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


class Consortium:
    """Every bank of a ring file as child processes (``consortium up``, tests, benchmarks)."""

    def __init__(
        self,
        config: RingConfig,
        *,
        secret: str,
        log_dir: Path | None = None,
        parent_watch: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        base = dict(os.environ if env is None else env)
        base[config.secret_env] = secret
        self.config = config
        self.banks = {
            bank.id: BankProcess(
                config,
                bank.id,
                env=base,
                log_path=None if log_dir is None else log_dir / f"{bank.id}.log",
                parent_watch=parent_watch,
            )
            for bank in config.banks
        }

    def __getitem__(self, bank_id: str) -> BankProcess:
        return self.banks[bank_id]

    def start(self, *, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start every bank and wait until each answers; stops them all on failure."""
        try:
            for bank in self.banks.values():
                bank.start()
            for bank in self.banks.values():
                bank.wait_ready(timeout_s=timeout_s)
        except BaseException:
            self.stop()
            raise

    def stop(self, *, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, int | None]:
        """Stop every bank (SIGTERM to all first, then wait for each); their exit codes."""
        for bank in self.banks.values():
            if bank.alive():
                bank.signal(signal.SIGCONT)
                bank.signal(signal.SIGTERM)
        # One SIGTERM each: a second one could reach a bank after its shutdown has put the
        # default handler back, and kill it in the middle of leaving the ring.
        return {
            bank_id: bank.stop(timeout_s=timeout_s, signalled=True)
            for bank_id, bank in self.banks.items()
        }

    def statuses(self) -> dict[str, Any]:
        return {bank_id: bank.status() for bank_id, bank in self.banks.items()}

    def __enter__(self) -> Consortium:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- Watching a ring of child processes (tests and the benchmark) ----------------------------

CATCH_ATTEMPTS_MAX = 40
"""How many times :func:`catch_holder` tries to stop a bank while it holds the token."""
CATCH_WAIT_S = 15.0
"""How long :func:`catch_holder` samples, in all, for a bank that reports holding the token
(the ring's first token takes up to a loss timeout to appear)."""
STATUS_TIMEOUT_S = 1.0
"""How long one ``/ring/status`` may take before the bank counts as not answering."""


async def fetch_statuses(
    session: aiohttp.ClientSession,
    banks: Mapping[str, str],
    *,
    timeout_s: float = STATUS_TIMEOUT_S,
) -> dict[str, Any]:
    """``GET /ring/status`` of every bank (id -> url) at once; ``None`` for a silent one."""

    async def one(url: str) -> Any:
        try:
            async with asyncio.timeout(timeout_s):
                async with session.get(url + "/ring/status") as response:
                    if response.status != 200:
                        return None
                    return await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    answers = await asyncio.gather(*(one(url) for url in banks.values()))
    return dict(zip(banks, answers, strict=True))


def _fence_seen(status: Any) -> Fence | None:
    if not status or not status.get("fence_seen"):
        return None
    return Fence.from_dict(status["fence_seen"])


async def catch_holder(
    session: aiohttp.ClientSession,
    consortium: Consortium,
    *,
    among: Sequence[str] | None = None,
    attempts_max: int = CATCH_ATTEMPTS_MAX,
) -> tuple[str, Fence, float]:
    """SIGSTOP a bank while it holds the token: its id, the fence it holds and when it was
    stopped (``time.monotonic()``); it is left stopped.

    A status sample names the holder; it is stopped at once, and then the others are watched
    for a while: if one of them takes a newer fence of the same generation, the token had
    already been handed on, so the bank is resumed and the catch tried again. The token is
    known to be stuck in the stopped bank once no other bank moves past its fence for three
    hand-off timeouts (well under the loss timeout, so no claim has begun yet).
    """
    token = consortium.config.token
    settle_s = 3 * token.handoff_timeout_ms / 1000
    candidates = list(consortium.banks) if among is None else list(among)
    urls = {bank_id: consortium[bank_id].url for bank_id in consortium.banks
            if consortium[bank_id].alive()}  # fmt: skip
    loop = asyncio.get_running_loop()
    sampling_deadline = loop.time() + CATCH_WAIT_S
    attempts = 0
    while attempts < attempts_max and loop.time() < sampling_deadline:
        statuses = await fetch_statuses(session, urls)
        holder = next(
            (b for b in candidates if statuses.get(b) and statuses[b]["holding"]), None
        )
        if holder is None:
            # Between visits, or before the first token: sample again shortly.
            await asyncio.sleep(token.hold_max_ms / 4000)
            continue
        attempts += 1
        consortium[holder].pause()
        stopped_at_s = time.monotonic()
        fence = _fence_seen(statuses[holder])
        assert fence is not None, "a holder has seen its own fence"
        others = {b: u for b, u in urls.items() if b != holder}
        deadline = loop.time() + settle_s
        moved_on = False
        while loop.time() < deadline and not moved_on:
            for status in (await fetch_statuses(session, others)).values():
                seen = _fence_seen(status)
                if seen is not None and seen.epoch == fence.epoch and seen > fence:
                    moved_on = True
            await asyncio.sleep(0.02)
        if not moved_on:
            return holder, fence, stopped_at_s
        consortium[holder].resume()
        # Let the resumed bank rejoin before the next try.
        await asyncio.sleep(settle_s)
    raise RuntimeError(
        f"no bank caught holding the token ({attempts} attempts in at most {CATCH_WAIT_S} s)"
    )
