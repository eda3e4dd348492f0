"""Quantities in the spellings people write, normalised once at the model boundary.

Memory and storage become whole MiB; CPU becomes cores (a float with millicore precision).
Size suffixes are binary whatever their spelling: ``4GB`` = ``4G`` = ``4Gi`` = ``4GiB`` = 4096 MiB,
because that is what operators mean when they size a VM or a volume, and it makes ``4GB`` equal
``4096MB`` as the original's users expect. A bare number is MiB; Docker's ``512m`` is MiB too.
"""

from __future__ import annotations

import math
import re
from typing import Final

from pydantic_core import PydanticCustomError

INVALID_QUANTITY: Final = "blueprint.invalid_quantity"

_MIB_PER_UNIT: Final[dict[str, float]] = {
    "": 1,
    "b": 1 / (1024 * 1024),
    "k": 1 / 1024,
    "m": 1,
    "g": 1024,
    "t": 1024**2,
    "p": 1024**3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([bkmgtp])(?:ib?|b)?)?\s*$", re.IGNORECASE)
_MILLICORES = re.compile(r"^\s*(\d+)\s*m\s*$")
_CORES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")

MAX_MIB: Final = 1024**4  # 1 EiB: anything larger is a typo, not a machine
MAX_CORES: Final = 100_000.0


def _quantity_error(what: str, value: object, detail: str) -> PydanticCustomError:
    return PydanticCustomError(
        INVALID_QUANTITY,
        "invalid {what} {value}: {detail}",
        {"what": what, "value": repr(value), "detail": detail},
    )


def parse_size_mib(value: object, what: str = "size") -> int:
    """``4GB``, ``4096MB``, ``4Gi``, ``512Mi``, ``512m`` or a bare integer (MiB) -> whole MiB."""
    allowed = "use a whole number of MiB or a size such as 512Mi, 4GB, 4Gi, 1TB"
    if isinstance(value, bool):
        raise _quantity_error(what, value, allowed)
    if isinstance(value, int):
        mib: float = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _quantity_error(what, value, allowed)
        mib = value
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if match is None:
            raise _quantity_error(what, value, allowed)
        mib = float(match.group(1)) * _MIB_PER_UNIT[(match.group(2) or "").lower()]
    else:
        raise _quantity_error(what, value, allowed)
    if mib <= 0:
        raise _quantity_error(what, value, "must be greater than zero")
    if mib > MAX_MIB:
        raise _quantity_error(what, value, "must be at most 1 EiB")
    if mib != int(mib):
        raise _quantity_error(what, value, "must be a whole number of MiB")
    return int(mib)


def parse_cpu(value: object) -> float:
    """Cores (``2``, ``0.5``, ``"1.5"``) or millicores (``"500m"``) -> cores, millicore precision."""
    allowed = "use cores (2, 0.5) or millicores ('500m')"
    if isinstance(value, bool):
        raise _quantity_error("cpu", value, allowed)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _quantity_error("cpu", value, allowed)
        millis = value * 1000
    elif isinstance(value, str):
        if (m := _MILLICORES.match(value)) is not None:
            millis = float(m.group(1))
        elif (c := _CORES.match(value)) is not None:
            millis = float(c.group(1)) * 1000
        else:
            raise _quantity_error("cpu", value, allowed)
    else:
        raise _quantity_error("cpu", value, allowed)
    if millis <= 0:
        raise _quantity_error("cpu", value, "must be greater than zero")
    if millis > MAX_CORES * 1000:
        raise _quantity_error("cpu", value, "must be at most 100000 cores")
    if abs(millis - round(millis)) > 1e-6:
        raise _quantity_error("cpu", value, "finer than one millicore")
    return round(millis) / 1000


def format_mib(mib: int) -> str:
    """The shortest exact binary spelling: 4096 -> ``4Gi``, 1536 -> ``1536Mi``."""
    for unit, factor in (("Pi", 1024**3), ("Ti", 1024**2), ("Gi", 1024)):
        if mib % factor == 0:
            return f"{mib // factor}{unit}"
    return f"{mib}Mi"


def format_cpu(cores: float) -> str:
    """Whole cores as ``2``, fractions as millicores ``500m``."""
    millis = round(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
