"""The token buckets of the login endpoints, with the clock stepped instead of waited for."""

from __future__ import annotations

import pytest

from api.rate_limit import RateLimiter, TokenBucket, client_key


def test_bucket_gives_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(burst=3, per_second=2.0, tokens=3.0, updated=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after() == pytest.approx(0.5)
    assert bucket.take(0.25) is False
    assert bucket.take(0.5) is True
    # A long pause fills the bucket up to its burst, no further.
    assert sum(bucket.take(1000.0) for _ in range(10)) == 3


def test_bucket_ignores_a_clock_that_goes_back() -> None:
    bucket = TokenBucket(burst=1, per_second=1.0, tokens=0.0, updated=10.0)
    assert bucket.take(5.0) is False
    assert bucket.take(10.5) is False
    assert bucket.take(11.0) is True


def test_limiter_counts_each_client_apart() -> None:
    limiter = RateLimiter(burst=2, per_second=1.0)
    assert limiter.allow("a", 0) and limiter.allow("a", 0)
    assert not limiter.allow("a", 0)
    assert limiter.check("a", 0) == pytest.approx(1.0)
    assert limiter.allow("b", 0)
    assert limiter.allow("a", 1.0)


def test_limiter_table_is_bounded() -> None:
    limiter = RateLimiter(burst=1, per_second=0.001, max_clients=100)
    for i in range(10_000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}", 0)
    assert len(limiter) == 100
    # The most recent clients are still counted: their buckets are empty.
    assert not limiter.allow("10.0.39.15", 0)


@pytest.mark.parametrize(("host", "key"), [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    (None, "local"),
    ("not-an-address", "not-an-address"),
])
def test_client_key(host: str | None, key: str) -> None:
    assert client_key(host) == key


def test_limiter_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        RateLimiter(burst=0, per_second=1.0)
