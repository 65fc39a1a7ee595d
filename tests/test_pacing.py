"""AdaptiveLimit: how many requests may be in flight, against simulated endpoints.

The endpoint is simulated window by window with a fake clock: `limit` attempts per window,
each refused with 429 with a probability that either grows with our load (a real rate limit:
only the excess over `cap` is refused) or does not (an overloaded provider refusing at random).
"""
import asyncio
import random
import time

from selfinstruct.llm import AdaptiveLimit


def simulate(refused_share, windows=300, maximum=32, seed=1):
    now = [0.0]
    rng = random.Random(seed)
    limit = AdaptiveLimit(maximum, clock=lambda: now[0])
    seen = []
    for _ in range(windows):
        start, n = now[0], limit.limit
        p = refused_share(n)
        for i in range(n):
            now[0] = start + (i + 1) / n
            limit.after_attempt("rate_limit" if rng.random() < p else None, start)
        seen.append(limit.limit)
    settled = seen[100:]
    return sum(settled) / len(settled), limit


def test_no_429_keeps_the_maximum():
    mean, limit = simulate(lambda n: 0.0)
    assert mean == 32 and limit.cuts == 0


def test_a_real_rate_limit_is_found_and_kept():
    for cap in (10, 20):
        mean, limit = simulate(lambda n: max(0.0, (n - cap) / n))
        assert 0.7 * cap <= mean <= 1.3 * cap, (cap, mean)
        assert limit.cuts > 0


def test_random_refusals_do_not_collapse_the_concurrency():
    for share in (0.05, 1 / 3):
        mean, limit = simulate(lambda n: share)
        assert mean >= 20, (share, mean)     # plain AIMD settles near 2-4 here
        assert limit.undone > 0


def test_a_burst_from_requests_already_in_flight_cuts_once():
    now = [10.0]
    limit = AdaptiveLimit(32, clock=lambda: now[0])
    for _ in range(20):
        limit.after_attempt(None, 9.0)
    for _ in range(10):
        limit.after_attempt("rate_limit", 9.5)      # all sent before the cut
    assert limit.cuts == 1 and limit.limit == 16 and limit.rate_limited == 10


def test_requests_per_minute_cap_paces_attempts():
    limit = AdaptiveLimit(8, rpm=120)               # 2 a second, a burst of 10
    async def go():
        start = time.monotonic()
        for _ in range(14):
            await limit.before_attempt(100)
        return time.monotonic() - start
    elapsed = asyncio.run(go())
    assert 1.7 <= elapsed <= 3.5
