"""The example of README.md, run as written: three processes, one counter file, no
lost update (an increment is counted, or refused and answered 409)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bank.process import get_json, write_ring_file

pytestmark = pytest.mark.processes

DOC = Path(__file__).parent.parent / "README.md"
MARKER = "<!-- example: ring_counter.py"
WAIT_S = 30.0
REQUESTS = 30


def example_source() -> str:
    text = DOC.read_text(encoding="utf-8")
    after = text[text.index(MARKER):]
    match = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert match is not None, "the example's code block is missing"
    return match.group(1)


async def test_the_documented_example_counts_every_increment_once(tmp_path: Path) -> None:
    script = tmp_path / "ring_counter.py"
    script.write_text(example_source(), encoding="utf-8")
    # A visit far longer than the blocks: on a starved machine a 1 ms block must not outlive
    # its visit (that is the documented deadline, not what this test is about).
    config = write_ring_file(
        tmp_path / "ring.toml", ("alfa", "beta", "gama"), hold_max_ms=300, loss_timeout_ms=3000
    )
    counter = tmp_path / "counter.json"
    env = dict(os.environ, CONSORTIUM_SECRET="example-key")
    logs = {member: tmp_path / f"{member}.log" for member in config.member_ids}
    processes = []
    for member in reversed(config.member_ids):  # the first member bids as it starts
        with logs[member].open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, str(script), str(config.path), member, str(counter)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while not all(get_json(b.url + "/ring/status", timeout_s=0.5) for b in config.banks):
            assert loop.time() < deadline, "the example's processes did not start"
            assert all(p.poll() is None for p in processes), "an example process exited"
            await asyncio.sleep(0.1)
        # A second copy of a member, started by mistake: it cannot have the address, and
        # stops before its ring member says a word to the ring (no claim, no leaving).
        second = subprocess.run(
            [sys.executable, str(script), str(config.path), "alfa", str(counter)],
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert second.returncode != 0 and "address already in use" in second.stderr.lower(), second.stderr
        assert "ring." not in second.stdout + second.stderr, second.stdout + second.stderr
        urls = [config.banks[i % 3].url + "/increment" for i in range(REQUESTS)]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session:

            async def increment(url: str) -> tuple[int, dict[str, object]]:
                async with session.post(url) as response:
                    assert response.status in (200, 409)
                    answer: dict[str, object] = await response.json()
                    return response.status, answer

            answers = await asyncio.gather(*(increment(url) for url in urls))
        counted = [a for status, a in answers if status == 200]
        stored = json.loads(counter.read_text())
        # Every increment answered 200 is in the file once; a refused one (a block that
        # outlived its visit) is in it not at all. With visits this long, nearly all count.
        assert sorted(a["value"] for a in counted) == list(range(1, stored["value"] + 1))  # type: ignore[type-var]
        assert len(counted) >= REQUESTS // 2
        assert {a["member"] for a in counted} == set(config.member_ids)
        assert f"{stored['fence']['epoch']}/{stored['fence']['issuer']}/{stored['fence']['seq']}" == max(
            (str(a["fence"]) for a in counted), key=lambda f: (int(f.split("/")[0]), f.split("/")[1], int(f.split("/")[2]))
        )
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Shown by pytest only when the test failed: what each member said.
        for member, path in logs.items():
            tail = path.read_text(errors="replace").splitlines()[-15:]
            print(f"--- {member} ---", *tail, sep="\n")


def test_the_examples_counter_refuses_a_late_or_stale_write(tmp_path: Path) -> None:
    """The file's side of fencing, as the example writes it: a write is taken from the fence
    of the last write or a newer one, and only by a block that read what is there now."""
    from tokenring import Fence

    namespace: dict[str, object] = {"__name__": "ring_counter"}
    exec(compile(example_source(), "ring_counter.py", "exec"), namespace)
    read, write_if_current = namespace["read"], namespace["write_if_current"]
    counter = tmp_path / "counter.json"
    older, visit, newer = Fence(1, "alfa", 4), Fence(1, "alfa", 5), Fence(2, "beta", 1)
    assert write_if_current(counter, None, 1, visit)  # type: ignore[operator]
    assert write_if_current(counter, visit, 2, visit)  # type: ignore[operator]  # the same visit again
    assert not write_if_current(counter, visit, 3, older)  # type: ignore[operator]  # a late holder
    assert not write_if_current(counter, None, 1, newer)  # type: ignore[operator]  # read before the last write
    assert read(counter) == (2, visit)  # type: ignore[operator]
    assert write_if_current(counter, visit, 3, newer)  # type: ignore[operator]
    assert read(counter) == (3, newer)  # type: ignore[operator]
