"""Passwords and the login brake: hashes are salted and self-describing, the brake trips after
the named number of failures, forgets old ones, lifts after the lockout, and stays bounded."""

from __future__ import annotations

from bank import auth
from bank.auth import LoginThrottle, hash_password, token_hash, verify_password


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


def test_a_password_hash_is_salted_and_verifies_only_its_password() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second  # a fresh salt each time
    assert first.startswith(f"scrypt${auth.SCRYPT_N}${auth.SCRYPT_R}${auth.SCRYPT_P}$")
    assert "correct horse" not in first
    assert verify_password("correct horse", first) and verify_password("correct horse", second)
    assert not verify_password("correct horsE", first)
    assert not verify_password("correct horse", "md5$abc")
    assert not verify_password("correct horse", "scrypt$1048576$8$1$AAAA$AAAA")  # cost too high


def test_tokens_are_stored_as_their_sha256() -> None:
    token = auth.new_token()
    assert len(token) >= 40 and token_hash(token) != token and len(token_hash(token)) == 64


def test_the_brake_trips_after_the_named_failures_and_lifts_after_the_lockout() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(auth.LOGIN_FAILURES_MAX - 1):
        throttle.failed("a")
        assert throttle.retry_after_s("a") == 0
    throttle.failed("a")
    assert throttle.retry_after_s("a") == auth.LOGIN_LOCKOUT_S
    assert throttle.retry_after_s("b") == 0
    clock.now_s += auth.LOGIN_LOCKOUT_S
    assert throttle.retry_after_s("a") == 0


def test_old_failures_are_forgotten_and_success_clears_them() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(auth.LOGIN_FAILURES_MAX - 1):
        throttle.failed("a")
    clock.now_s += auth.LOGIN_FAILURE_WINDOW_S
    throttle.failed("a")  # the earlier ones fell out of the window
    assert throttle.retry_after_s("a") == 0
    for _ in range(auth.LOGIN_FAILURES_MAX - 2):
        throttle.failed("a")
    throttle.succeeded("a")
    throttle.failed("a")
    assert throttle.retry_after_s("a") == 0


def test_the_brake_remembers_a_bounded_number_of_documents() -> None:
    throttle = LoginThrottle(clock=FakeClock(), documents_max=3, failures_max=1)
    for document in ("a", "b", "c", "d"):
        throttle.failed(document)
    assert throttle.retry_after_s("a") == 0  # the oldest was forgotten
    assert all(throttle.retry_after_s(d) > 0 for d in ("b", "c", "d"))


def test_a_rate_limit_allows_the_named_uses_per_sliding_window() -> None:
    clock = FakeClock()
    limit = auth.RateLimit(limit=3, window_s=60.0, clock=clock)
    for _ in range(3):
        assert limit.take("a") == 0
        clock.now_s += 10
    assert limit.take("a") == 30.0  # the first use leaves the window 60 s after it was made
    assert limit.take("b") == 0  # each key has its own allowance
    clock.now_s += 30
    assert limit.take("a") == 0  # the first use has left; the refused ones never counted
    assert limit.take("a") == 10.0


def test_a_rate_limit_remembers_a_bounded_number_of_keys() -> None:
    limit = auth.RateLimit(limit=1, window_s=60.0, keys_max=3, clock=FakeClock())
    for key in ("a", "b", "c", "d"):
        assert limit.take(key) == 0
    assert limit.take("a") == 0  # the least recently used was forgotten
    assert all(limit.take(key) > 0 for key in ("c", "d"))
