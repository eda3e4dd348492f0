import math

import pytest
from pydantic_core import PydanticCustomError

from alma_mcp.blueprint.quantities import format_cpu, format_mib, parse_cpu, parse_size_mib


@pytest.mark.parametrize(
    ("raw", "mib"),
    [
        ("4GB", 4096),
        ("4096MB", 4096),
        ("4Gi", 4096),
        ("4GiB", 4096),
        ("4G", 4096),
        ("4gb", 4096),
        ("512Mi", 512),
        ("512m", 512),
        ("512", 512),
        (512, 512),
        (512.0, 512),
        ("1.5GB", 1536),
        ("1TB", 1024 * 1024),
        ("1Ti", 1024 * 1024),
        ("2048KiB", 2),
        (" 8 GB ", 8192),
    ],
)
def test_sizes_normalise_to_mib(raw: object, mib: int) -> None:
    assert parse_size_mib(raw) == mib


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ("4 apples", "use a whole number of MiB"),
        ("", "use a whole number of MiB"),
        ("-4GB", "use a whole number of MiB"),
        (0, "must be greater than zero"),
        (-1, "must be greater than zero"),
        ("0.5Mi", "must be a whole number of MiB"),
        ("100b", "must be a whole number of MiB"),
        (True, "use a whole number of MiB"),
        (math.nan, "use a whole number of MiB"),
        (math.inf, "use a whole number of MiB"),
        ([4], "use a whole number of MiB"),
        ("2000PB", "must be at most 1 EiB"),
    ],
)
def test_bad_sizes_are_refused_with_the_quantity_code(raw: object, detail: str) -> None:
    with pytest.raises(PydanticCustomError) as info:
        parse_size_mib(raw, "memory")
    assert info.value.type == "blueprint.invalid_quantity"
    assert detail in str(info.value)
    assert "invalid memory" in str(info.value)


@pytest.mark.parametrize(
    ("raw", "cores"),
    [(2, 2.0), (0.5, 0.5), ("1.5", 1.5), ("500m", 0.5), ("2500m", 2.5), ("1m", 0.001), ("4", 4.0)],
)
def test_cpu_accepts_cores_and_millicores(raw: object, cores: float) -> None:
    assert parse_cpu(raw) == cores


@pytest.mark.parametrize("raw", ["two", "0", 0, -1, "0.0001", True, "5 cores", math.inf, None])
def test_bad_cpu_is_refused(raw: object) -> None:
    with pytest.raises(PydanticCustomError) as info:
        parse_cpu(raw)
    assert info.value.type == "blueprint.invalid_quantity"


def test_formatting_is_the_shortest_exact_binary_spelling() -> None:
    assert format_mib(4096) == "4Gi"
    assert format_mib(1536) == "1536Mi"
    assert format_mib(1024 * 1024 * 3) == "3Ti"
    assert format_cpu(2.0) == "2"
    assert format_cpu(0.25) == "250m"
