"""Two-dimensional First-Fit-Decreasing: how many hosts of one shape hold a set of instances.

Sizes are integer (millicores, MiB) pairs, so capacity checks are exact. Items are sorted by their
larger share of a host, ``max(cpu / C, mem / M)``, descending (ties: larger cpu, then larger
memory), and each goes into the first open host it fits (Karpenter packs the same way). Equal
items are placed as a group: first-fit puts a run of equal items into the earliest hosts, each
filled as far as it goes, which numpy computes over all open hosts at once. That is the packing
one-by-one placement gives, in time proportional to the number of distinct shapes, not items.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alma_mcp.lazy import LazyModule

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    _IntArray = npt.NDArray[np.int64]
else:
    np = LazyModule("numpy")  # imported on first use, not at server start-up


Shape = tuple[int, int]
"""(cpu millicores, memory MiB) of one item or one host."""


@dataclass(frozen=True, slots=True)
class Packing:
    """Hosts used (what each holds and its load), the lower bound, and demand too big for any host."""

    capacity: Shape
    hosts: list[dict[Shape, int]]
    loads: list[Shape]
    lower_bound: int
    oversized: dict[Shape, int]

    @property
    def count(self) -> int:
        """Number of hosts used."""
        return len(self.hosts)


def lower_bound(demand: Mapping[Shape, int], capacity: Shape) -> int:
    """``max(ceil(sum cpu / C), ceil(sum mem / M))``: no packing uses fewer hosts."""
    total_c = sum(c * n for (c, _), n in demand.items())
    total_m = sum(m * n for (_, m), n in demand.items())
    return max(_ceil_div(total_c, capacity[0]), _ceil_div(total_m, capacity[1]))


def pack(demand: Mapping[Shape, int], capacity: Shape) -> Packing:
    """FFD of ``demand`` (shape -> how many items of it) into hosts of ``capacity``.

    Empty items need no host; items larger than a host in either dimension are left out and listed.

    Raises:
        ValueError: a non-positive capacity, or a negative size or count (callers validate first).
    """
    cap_c, cap_m = capacity
    if cap_c <= 0 or cap_m <= 0:
        raise ValueError("host capacity must be positive in both dimensions")
    packer = _Packer(capacity)
    oversized: dict[Shape, int] = {}
    placed: dict[Shape, int] = {}
    for shape, count in demand.items():
        if min(*shape, count) < 0:
            raise ValueError(f"negative size or count in {shape}: {count}")
        if shape[0] > cap_c or shape[1] > cap_m:
            oversized[shape] = count
        elif count and shape != (0, 0):
            placed[shape] = count
    for shape in _decreasing(placed, capacity):
        for host, k in packer.place(shape, placed[shape]):
            packer.hosts[host][shape] = packer.hosts[host].get(shape, 0) + k
    return Packing(capacity, packer.hosts, packer.loads(), lower_bound(placed, capacity), oversized)


def first_fit_decreasing(items: Sequence[Shape], capacity: Shape) -> list[list[int]]:
    """Item-level FFD: the indices of ``items`` in each host (oversized and empty items omitted)."""
    members: dict[Shape, list[int]] = {}
    for index, shape in enumerate(items):
        members.setdefault(shape, []).append(index)
    packing = pack({shape: len(idx) for shape, idx in members.items()}, capacity)
    cursor = dict.fromkeys(members, 0)
    bins: list[list[int]] = []
    for host in packing.hosts:
        contents: list[int] = []
        for shape, k in host.items():
            contents.extend(members[shape][cursor[shape] : cursor[shape] + k])
            cursor[shape] += k
        bins.append(sorted(contents))
    return bins


def _decreasing(shapes: Iterable[Shape], capacity: Shape) -> list[Shape]:
    cap_c, cap_m = capacity
    return sorted(shapes, key=lambda s: (-max(s[0] / cap_c, s[1] / cap_m), -s[0], -s[1]))


class _Packer:
    def __init__(self, capacity: Shape) -> None:
        self.cap = capacity
        self.rem_c: _IntArray = np.zeros(16, dtype=np.int64)
        self.rem_m: _IntArray = np.zeros(16, dtype=np.int64)
        self.hosts: list[dict[Shape, int]] = []

    def place(self, shape: Shape, count: int) -> list[tuple[int, int]]:
        """First-fit ``count`` items of ``shape``: (host index, how many) in host order."""
        c, m = shape
        n = len(self.hosts)
        rem_c, rem_m = self.rem_c[:n], self.rem_m[:n]  # views: updated in place
        fits = np.minimum(_fit(rem_c, c, count), _fit(rem_m, m, count))
        before = np.cumsum(fits) - fits  # items of the run that earlier hosts would take
        take = np.clip(count - before, 0, fits)
        rem_c -= take * c
        rem_m -= take * m
        placements = [(host, int(take[host])) for host in np.flatnonzero(take).tolist()]
        left = count - sum(k for _, k in placements)
        per_host = min(self.cap[0] // c if c else left, self.cap[1] // m if m else left)
        while left > 0:
            k = min(per_host, left)
            placements.append((self._open(self.cap[0] - k * c, self.cap[1] - k * m), k))
            left -= k
        return placements

    def _open(self, rem_c: int, rem_m: int) -> int:
        n = len(self.hosts)
        if n == len(self.rem_c):
            self.rem_c = np.concatenate([self.rem_c, np.zeros(n, dtype=np.int64)])
            self.rem_m = np.concatenate([self.rem_m, np.zeros(n, dtype=np.int64)])
        self.rem_c[n], self.rem_m[n] = rem_c, rem_m
        self.hosts.append({})
        return n

    def loads(self) -> list[Shape]:
        n = len(self.hosts)
        used_c = (self.cap[0] - self.rem_c[:n]).tolist()
        used_m = (self.cap[1] - self.rem_m[:n]).tolist()
        return list(zip(used_c, used_m, strict=True))


def _fit(remaining: _IntArray, size: int, count: int) -> _IntArray:
    """How many items of ``size`` fit in each remaining capacity (``count`` when size is 0)."""
    if size == 0:
        return np.full_like(remaining, count)
    return remaining // size


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)
