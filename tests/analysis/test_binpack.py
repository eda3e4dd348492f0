"""First-Fit-Decreasing: valid packings, one-by-one equivalence, and the gap to an exact optimum."""

import random
from collections import Counter

import pytest

from alma_mcp.analysis.binpack import Shape, first_fit_decreasing, lower_bound, pack


def optimum(items: list[Shape], capacity: Shape) -> int:
    """Fewest hosts, by exhaustive search (items placed largest first, into open hosts or one new host)."""
    order = sorted(items, key=lambda s: (-max(s[0] / capacity[0], s[1] / capacity[1]), -s[0], -s[1]))
    best = len(order)

    def place(i: int, loads: list[list[int]]) -> None:
        nonlocal best
        if len(loads) >= best:
            return
        if i == len(order):
            best = len(loads)
            return
        c, m = order[i]
        tried: set[tuple[int, int]] = set()
        for load in loads:
            key = (load[0], load[1])
            if key in tried or load[0] + c > capacity[0] or load[1] + m > capacity[1]:
                continue
            tried.add(key)
            load[0] += c
            load[1] += m
            place(i + 1, loads)
            load[0] -= c
            load[1] -= m
        loads.append([c, m])
        place(i + 1, loads)
        loads.pop()

    place(0, [])
    return best


def one_by_one(items: list[Shape], capacity: Shape) -> list[list[int]]:
    """Textbook FFD, one item at a time: the reference for the grouped implementation."""
    order = sorted(
        range(len(items)),
        key=lambda i: (-max(items[i][0] / capacity[0], items[i][1] / capacity[1]), -items[i][0], -items[i][1], i),
    )
    loads: list[list[int]] = []
    bins: list[list[int]] = []
    for i in order:
        c, m = items[i]
        if c > capacity[0] or m > capacity[1] or (c, m) == (0, 0):
            continue
        for load, members in zip(loads, bins, strict=True):
            if load[0] + c <= capacity[0] and load[1] + m <= capacity[1]:
                load[0] += c
                load[1] += m
                members.append(i)
                break
        else:
            loads.append([c, m])
            bins.append([i])
    return [sorted(b) for b in bins]


def random_items(rng: random.Random, n: int, capacity: Shape, distinct: int) -> list[Shape]:
    shapes = [(rng.randint(0, capacity[0]), rng.randint(1, capacity[1])) for _ in range(distinct)]
    return [rng.choice(shapes) for _ in range(n)]


def test_ffd_is_never_below_the_optimum_and_at_most_one_above_on_small_cases() -> None:
    rng = random.Random(7)
    capacity = (10, 10)
    gaps = Counter[int]()
    for _ in range(200):
        items = [(rng.randint(1, 7), rng.randint(1, 7)) for _ in range(rng.randint(2, 8))]
        best = optimum(items, capacity)
        packing = pack(Counter(items), capacity)
        assert lower_bound(Counter(items), capacity) <= best <= packing.count <= best + 1
        gaps[packing.count - best] += 1
    assert gaps[0] >= 150  # FFD is optimal on most small instances


def test_known_instance_matches_hand_packing() -> None:
    items = [(5, 5), (5, 5), (3, 3), (7, 2), (2, 7), (0, 0), (11, 1)]
    assert first_fit_decreasing(items, (10, 10)) == [[3, 4], [0, 1], [2]]
    packing = pack(Counter(items), (10, 10))
    assert packing.loads == [(9, 9), (10, 10), (3, 3)]
    assert packing.oversized == {(11, 1): 1}
    assert packing.lower_bound == 3


@pytest.mark.parametrize("seed", range(30))
def test_grouped_placement_equals_one_by_one_ffd(seed: int) -> None:
    rng = random.Random(seed)
    capacity = (rng.randint(4, 64) * 250, rng.randint(4, 64) * 512)
    items = random_items(rng, rng.randint(1, 300), capacity, rng.randint(1, 12))
    assert first_fit_decreasing(items, capacity) == one_by_one(items, capacity)


def test_packing_is_valid_and_places_every_item_once() -> None:
    rng = random.Random(11)
    capacity = (32_000, 131_072)
    items = random_items(rng, 2_000, capacity, 40)
    bins = first_fit_decreasing(items, capacity)
    placed = [i for b in bins for i in b]
    assert sorted(placed) == [i for i, s in enumerate(items) if s != (0, 0)]
    for b in bins:
        assert sum(items[i][0] for i in b) <= capacity[0]
        assert sum(items[i][1] for i in b) <= capacity[1]


def test_zero_cpu_items_pack_by_memory_alone() -> None:
    packing = pack({(0, 300): 10}, (1000, 1000))
    assert packing.count == 4
    assert packing.loads == [(0, 900), (0, 900), (0, 900), (0, 300)]


def test_empty_demand_needs_no_host() -> None:
    packing = pack({}, (1, 1))
    assert (packing.count, packing.lower_bound, packing.loads) == (0, 0, [])


@pytest.mark.parametrize(("demand", "capacity"), [({(1, 1): 1}, (0, 10)), ({(-1, 1): 1}, (10, 10))])
def test_bad_sizes_raise_value_error(demand: dict[Shape, int], capacity: Shape) -> None:
    with pytest.raises(ValueError, match=r"positive|negative"):
        pack(demand, capacity)
