"""The layers: the ``tokenring`` library stands on its own and never imports ``bank``."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import pkgutil, importlib, sys
import tokenring
for module in pkgutil.walk_packages(tokenring.__path__, "tokenring."):
    importlib.import_module(module.name)
print(sorted(m for m in sys.modules if m == "bank" or m.startswith(("bank.", "scenarios"))))
"""


def test_tokenring_imports_nothing_of_bank_or_scenarios() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_library_face_is_importable_from_the_package() -> None:
    import tokenring

    assert {"Ring", "Fence", "Member", "RingConfig", "load"} <= set(tokenring.__all__)
