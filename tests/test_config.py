"""ring.toml: a good file parses into values; each kind of bad file is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenring.config import ConfigError, load

GOOD = """
[consortium]
name = "demo"
secret_env = "CONSORTIUM_SECRET"
data_dir = "var"

[token]
hold_max_ms = 25

[[banks]]
id = "alfa"
name = "Banco Alfa"
url = "http://127.0.0.1:8101"

[[banks]]
id = "beta"
name = "Banco Beta"
url = "http://127.0.0.1:8102"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ring.toml"
    path.write_text(text)
    return path


def test_good_file_parses_in_ring_order(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD))
    assert config.name == "demo"
    assert config.member_ids == ("alfa", "beta")
    assert config.token.hold_max_ms == 25
    assert config.token.loss_timeout_ms is None
    assert config.data_dir == (tmp_path / "var").resolve()
    assert config.bank("beta").port == 8102


def test_repository_ring_toml_is_valid() -> None:
    config = load(Path(__file__).parent.parent / "ring.toml")
    assert config.member_ids == ("alfa", "beta", "gama")


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        ('name = "demo"', 'name = "demo"\ncolour = "red"', "consortium.colour", "unknown key"),
        ("hold_max_ms = 25", "hold_max_ms = 25\nspeed = 1", "token.speed", "unknown key"),
        ('id = "beta"', 'id = "alfa"', "banks[1].id", "duplicate id"),
        ("8102", "8101", "banks[1].url", "duplicate url"),
        ("http://127.0.0.1:8102", "ftp://127.0.0.1:8102", "banks[1].url", "http://"),
        ("http://127.0.0.1:8102", "http://127.0.0.1", "banks[1].url", "port"),
        # Port 0 would be any free port: one the other members cannot know.
        ("http://127.0.0.1:8102", "http://127.0.0.1:0", "banks[1].url", "not 0"),
        # Members speak plain HTTP (signed): an https url would fail every send, silently.
        ("http://127.0.0.1:8102", "https://127.0.0.1:8102", "banks[1].url", "http://"),
        ('id = "beta"', 'id = "Beta!"', "banks[1].id", "[a-z0-9-]+"),
        ("hold_max_ms = 25", "hold_max_ms = 0", "token.hold_max_ms", "positive"),
        ("hold_max_ms = 25", "hold_max_ms = -3", "token.hold_max_ms", "positive"),
        ("hold_max_ms = 25", "hold_max_ms = 2.5", "token.hold_max_ms", "integer"),
        ("hold_max_ms = 25", "hold_max_ms = 25\nloss_timeout_ms = 0", "token.loss_timeout_ms",
         "positive"),
        ("hold_max_ms = 25", "", "token.hold_max_ms", "missing"),
        # Two banks: one rotation at full visits is 2 x 25 ms; a loss timeout within it is none.
        ("hold_max_ms = 25", "hold_max_ms = 25\nloss_timeout_ms = 50", "token.loss_timeout_ms",
         "not above one rotation"),
        ('secret_env = "CONSORTIUM_SECRET"', 'secret_env = "not a var"', "consortium.secret_env",
         "environment variable"),
    ],
)
def test_bad_file_is_refused_naming_file_and_key(
    tmp_path: Path, old: str, new: str, key: str, problem: str
) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load(path)
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(f"{path}: {key}: ")
    assert problem in line


def test_empty_ring_is_refused(tmp_path: Path) -> None:
    text = "banks = []\n" + GOOD.split("[[banks]]")[0]
    with pytest.raises(ConfigError, match="banks: empty"):
        load(write(tmp_path, text))


def test_missing_file_and_bad_toml_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found") as missing:
        load(tmp_path / "absent.toml")
    assert str(missing.value) == f"{tmp_path / 'absent.toml'}: file not found"  # no key to name
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "[consortium\n"))
    not_utf8 = tmp_path / "latin1.toml"
    not_utf8.write_bytes(GOOD.replace('name = "', 'name = "Jos\u00e9 ', 1).encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte \d+\)"):
        load(not_utf8)


def test_unset_secret_is_refused_and_set_secret_is_read(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="CONSORTIUM_SECRET is not set"):
        config.secret({})
    assert config.secret({"CONSORTIUM_SECRET": "k"}) == b"k"


def test_an_empty_secret_is_refused_as_empty_not_as_unset(tmp_path: Path) -> None:
    """``CONSORTIUM_SECRET=`` sets the variable: the message says what is wrong with it."""
    config = load(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="environment variable CONSORTIUM_SECRET is empty "):
        config.secret({"CONSORTIUM_SECRET": ""})


def test_unknown_bank_names_the_known_ones(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="known: alfa, beta"):
        config.bank("zeta")


def test_the_ring_files_scenarios_write_are_taken_for_every_ring_size(tmp_path: Path) -> None:
    """What ``consortium scenario`` starts (its ``scale`` goes up to 16 banks) is a file this
    module takes: a check of the file must not refuse the tool's own rings."""
    from scenarios.cluster import BANK_IDS, LocalRing

    for banks in (1, 3, 5, 9, len(BANK_IDS)):
        workdir = tmp_path / str(banks)
        workdir.mkdir()
        ring = LocalRing(banks, workdir=workdir)
        assert len(ring.config.banks) == banks
