"""The Mann-Whitney U test, two-sided, in pure Python (no scipy).

bench_report uses it the way Google Benchmark's tools/compare.py does: the
repetitions of one benchmark in the baseline and in the current run are two
samples; a small p-value says the two runs differ by more than their noise.

Exact p-values (the distribution of U over every ordering of the samples)
when there are no ties and the samples are small; otherwise the normal
approximation with tie correction and continuity correction, as in most
statistics packages.
"""
import functools
import math

# Largest n1 + n2 for which the exact distribution is enumerated.
EXACT_MAX_N = 50


def rank(values):
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = avg
        i = j + 1
    return ranks


@functools.lru_cache(maxsize=None)
def _u_counts(m, n):
    """counts[u] = how many orderings of m x's and n y's have U_x = u, where
    U_x counts the pairs (x, y) with x > y."""
    if m == 0 or n == 0:
        return (1,)
    # The largest element is an x (beats all n y's) or a y (beats nothing).
    a, b = _u_counts(m - 1, n), _u_counts(m, n - 1)
    out = [0] * (m * n + 1)
    for u, c in enumerate(a):
        out[u + n] += c
    for u, c in enumerate(b):
        out[u] += c
    return tuple(out)


def exact_p(u, m, n):
    """Two-sided exact p-value of U = u for samples of sizes m and n."""
    counts = _u_counts(m, n)
    total = math.comb(m + n, m)
    lo = min(u, m * n - u)
    tail = sum(counts[: int(math.floor(lo)) + 1])
    return min(1.0, 2.0 * tail / total)


def min_p(m, n):
    """The smallest two-sided p-value samples of sizes m and n can reach:
    when it is above alpha, the test cannot call anything significant."""
    if m == 0 or n == 0:
        return 1.0
    return min(1.0, 2.0 / math.comb(m + n, m))


class UTest:
    """Result of mann_whitney_u: u (for the first sample), p, method."""

    def __init__(self, u, p, method):
        self.u, self.p, self.method = u, p, method

    def __repr__(self):
        return f"UTest(u={self.u}, p={self.p:.4g}, method={self.method!r})"


def mann_whitney_u(x, y):
    """Two-sided Mann-Whitney U test of samples x and y (each non-empty)."""
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        raise ValueError("mann_whitney_u needs two non-empty samples")
    ranks = rank(list(x) + list(y))
    r1 = sum(ranks[:m])
    u1 = r1 - m * (m + 1) / 2
    ties = len(set(x) | set(y)) < m + n
    if not ties and m + n <= EXACT_MAX_N:
        return UTest(u1, exact_p(u1, m, n), "exact")
    big_n = m + n
    counts = {}
    for v in list(x) + list(y):
        counts[v] = counts.get(v, 0) + 1
    tie_term = sum(t ** 3 - t for t in counts.values()) / (big_n * (big_n - 1))
    var = m * n / 12.0 * ((big_n + 1) - tie_term)
    if var <= 0:
        return UTest(u1, 1.0, "normal")   # every value equal: no evidence
    mu = m * n / 2.0
    z = max(0.0, abs(u1 - mu) - 0.5) / math.sqrt(var)
    return UTest(u1, min(1.0, math.erfc(z / math.sqrt(2.0))), "normal")
