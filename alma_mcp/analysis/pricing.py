"""The price catalogue: unit prices per provider profile, read from ``resources/pricing/*.yaml``.

A file holds ``profiles`` (name -> profile) and may name the ``default`` one; a folder of such files
is one catalogue, with at most one file naming the default (otherwise the first profile of the
first file, in file-name order). A profile gives a currency, hours per month (730, as Infracost and
OpenCost count) and unit prices: vCPU-hour, GiB-RAM-hour, GPU-hour, GiB-month per storage class
(HDD, SSD, NVMe), load balancer and public IP per month. Compute prices are either written out or
derived from a ``host``: its monthly cost (purchase amortised over its lifetime, power times PUE,
rent, fees) split between vCPUs and GiB of RAM that workloads can allocate. Every estimate echoes
the resolved prices it used (``UnitPrices``), so a number can always be traced to its rate.
"""

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alma_mcp.blueprint.loader import load_data_file
from alma_mcp.errors import ConfigError, InvalidRequest

StorageClass = Literal["HDD", "SSD", "NVMe"]
STORAGE_CLASSES: tuple[StorageClass, ...] = ("HDD", "SSD", "NVMe")
ProfileKind = Literal["reference", "on_premises", "container_host", "kubernetes", "public_cloud"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostCost(_Data):
    """One host (server, rented machine or node) whose monthly cost is split into unit prices."""

    vcpus: float = Field(gt=0, allow_inf_nan=False, description="Schedulable vCPUs (threads) of the host.")
    ram_gib: float = Field(gt=0, allow_inf_nan=False)
    reserved_vcpus: float = Field(default=0, ge=0, allow_inf_nan=False, description="Kept for the OS/hypervisor.")
    reserved_ram_gib: float = Field(default=0, ge=0, allow_inf_nan=False)
    purchase_price: float = Field(default=0, ge=0, allow_inf_nan=False, description="Amortised over the lifetime.")
    lifetime_months: int = Field(default=60, ge=1, le=240)
    average_watts: float = Field(default=0, ge=0, allow_inf_nan=False)
    pue: float = Field(default=1.0, ge=1, le=5, description="Power usage effectiveness of the room.")
    energy_price_kwh: float = Field(default=0, ge=0, allow_inf_nan=False)
    monthly_price: float = Field(default=0, ge=0, allow_inf_nan=False, description="Rent, support, licences, ops.")
    hourly_price: float = Field(default=0, ge=0, allow_inf_nan=False, description="On-demand price of a rented node.")
    cpu_share: float = Field(default=0.5, gt=0, lt=1, description="Part of the host cost borne by vCPUs.")

    @model_validator(mode="after")
    def _allocatable(self) -> "HostCost":
        if self.reserved_vcpus >= self.vcpus or self.reserved_ram_gib >= self.ram_gib:
            raise ValueError("host reserves all its vCPUs or RAM; reserved_* must stay below vcpus / ram_gib")
        return self

    def monthly_cost(self, hours_per_month: float) -> float:
        """Amortisation + energy + fixed fees + rent, per month."""
        energy = self.average_watts * self.pue * hours_per_month / 1000 * self.energy_price_kwh
        return (
            self.purchase_price / self.lifetime_months
            + energy
            + self.monthly_price
            + self.hourly_price * hours_per_month
        )


class ProfileSpec(_Data):
    """A profile as written in a catalogue file."""

    description: str
    kind: ProfileKind
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")
    hours_per_month: float = Field(default=730, gt=0, le=744)
    source: str = ""
    vcpu_hour: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    ram_gib_hour: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    gpu_hour: float = Field(default=0, ge=0, allow_inf_nan=False)
    storage_gib_month: dict[StorageClass, float]
    default_storage_type: StorageClass = "SSD"
    load_balancer_month: float = Field(default=0, ge=0, allow_inf_nan=False)
    public_ip_month: float = Field(default=0, ge=0, allow_inf_nan=False)
    host: HostCost | None = None

    @model_validator(mode="after")
    def _complete(self) -> "ProfileSpec":
        explicit = (self.vcpu_hour is not None, self.ram_gib_hour is not None)
        if self.host is None and not all(explicit):
            raise ValueError("give vcpu_hour and ram_gib_hour, or a host to derive them from")
        if self.host is not None and any(explicit):
            raise ValueError("give either vcpu_hour/ram_gib_hour or a host, not both")
        prices = self.storage_gib_month
        if set(prices) != set(STORAGE_CLASSES) or any(not (math.isfinite(v) and v >= 0) for v in prices.values()):
            raise ValueError("storage_gib_month needs a non-negative price for each of HDD, SSD and NVMe")
        return self


class UnitPrices(BaseModel):
    """The resolved prices of one profile: what every estimate lists as the rates it used."""

    model_config = ConfigDict(frozen=True)

    profile: str
    description: str
    kind: ProfileKind
    currency: str
    hours_per_month: float
    vcpu_hour: float
    ram_gib_hour: float
    gpu_hour: float
    storage_gib_month: dict[StorageClass, float]
    default_storage_type: StorageClass
    load_balancer_month: float
    public_ip_month: float
    source: str
    host: HostCost | None = Field(default=None, description="The host the compute prices derive from.")
    host_monthly_cost: float | None = None

    @classmethod
    def resolve(cls, name: str, spec: ProfileSpec) -> "UnitPrices":
        """Derive compute prices from the host where needed (per allocatable vCPU / GiB)."""
        hours = spec.hours_per_month
        host_month: float | None = None
        if spec.host is None:
            # ProfileSpec guarantees both are set when there is no host.
            vcpu_hour, ram_hour = spec.vcpu_hour or 0.0, spec.ram_gib_hour or 0.0
        else:
            h = spec.host
            host_month = round(h.monthly_cost(hours), 6)
            vcpu_hour = round(host_month * h.cpu_share / (h.vcpus - h.reserved_vcpus) / hours, 8)
            ram_hour = round(host_month * (1 - h.cpu_share) / (h.ram_gib - h.reserved_ram_gib) / hours, 8)
        return cls(
            profile=name,
            description=spec.description,
            kind=spec.kind,
            currency=spec.currency,
            hours_per_month=hours,
            vcpu_hour=vcpu_hour,
            ram_gib_hour=ram_hour,
            gpu_hour=spec.gpu_hour,
            storage_gib_month=dict(spec.storage_gib_month),
            default_storage_type=spec.default_storage_type,
            load_balancer_month=spec.load_balancer_month,
            public_ip_month=spec.public_ip_month,
            source=spec.source,
            host=spec.host,
            host_monthly_cost=host_month,
        )


class _CatalogFile(_Data):
    default: str | None = None
    profiles: dict[str, ProfileSpec] = Field(min_length=1)


class PriceCatalog:
    """Named price profiles and the default one; immutable once loaded."""

    def __init__(self, profiles: Mapping[str, UnitPrices], default_profile: str, sources: tuple[str, ...] = ()):
        if default_profile not in profiles:
            raise ConfigError(
                f"default price profile {default_profile!r} is not defined; known: {', '.join(sorted(profiles))}",
                data={"default": default_profile, "known": sorted(profiles)},
            )
        self._profiles = dict(profiles)
        self.default_profile = default_profile
        self.sources = sources

    @property
    def profiles(self) -> Mapping[str, UnitPrices]:
        """Every profile by name (resolved prices)."""
        return dict(self._profiles)

    def get(self, name: str | None = None) -> UnitPrices:
        """The named profile, or the default one.

        Raises:
            InvalidRequest: no profile has that name (the message lists the known ones).
        """
        key = self.default_profile if name is None else name
        try:
            return self._profiles[key]
        except KeyError:
            known = sorted(self._profiles)
            raise InvalidRequest(
                f"unknown price profile {key!r}; use one of: {', '.join(known)}",
                data={"profile": key, "allowed": known},
            ) from None

    def as_resource(self) -> dict[str, Any]:
        """Plain data for ``alma://pricing``: the default, every profile's resolved prices, the files read."""
        return {
            "default_profile": self.default_profile,
            "profiles": {name: self._profiles[name].model_dump(mode="json") for name in sorted(self._profiles)},
            "sources": list(self.sources),
        }

    @classmethod
    def from_file(cls, path: Path | str) -> "PriceCatalog":
        """One catalogue file (e.g. the one ``ALMA_PRICING_FILE`` points at).

        Raises:
            ConfigError: the file is missing, not YAML, or not a valid catalogue (the file is named).
        """
        path = Path(path)
        parsed = _read(path)
        profiles = {name: UnitPrices.resolve(name, spec) for name, spec in parsed.profiles.items()}
        return cls._checked(profiles, parsed.default or next(iter(profiles)), (str(path),), path)

    @classmethod
    def from_directory(cls, path: Path | str) -> "PriceCatalog":
        """Every ``*.yaml`` file of a folder, in name order, as one catalogue.

        Raises:
            ConfigError: a file is invalid, two files define one profile or both name a default, or the
                folder holds no catalogue file.
        """
        folder = Path(path)
        files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
        if not files:
            raise ConfigError(f"no price catalogue (*.yaml) in {folder}", data={"file": str(folder)})
        profiles: dict[str, UnitPrices] = {}
        origin: dict[str, Path] = {}
        default: tuple[str, Path] | None = None
        for file in files:
            parsed = _read(file)
            for name, spec in parsed.profiles.items():
                if name in origin:
                    raise ConfigError(
                        f"price profile {name!r} is defined in both {origin[name]} and {file}; keep one",
                        data={"file": str(file), "profile": name},
                    )
                origin[name] = file
                profiles[name] = UnitPrices.resolve(name, spec)
            if parsed.default is not None:
                if default is not None:
                    raise ConfigError(
                        f"both {default[1]} and {file} name a default price profile; keep one",
                        data={"file": str(file)},
                    )
                default = (parsed.default, file)
        chosen, where = default if default is not None else (next(iter(profiles)), files[0])
        return cls._checked(profiles, chosen, tuple(str(f) for f in files), where)

    @classmethod
    def from_path(cls, path: Path | str) -> "PriceCatalog":
        """A folder (``from_directory``) or a single file (``from_file``)."""
        return cls.from_directory(path) if Path(path).is_dir() else cls.from_file(path)

    @classmethod
    def _checked(
        cls, profiles: dict[str, UnitPrices], default: str, sources: tuple[str, ...], where: Path
    ) -> "PriceCatalog":
        if default not in profiles:
            raise ConfigError(
                f"{where}: default price profile {default!r} is not defined; known: {', '.join(sorted(profiles))}",
                data={"file": str(where), "default": default},
            )
        return cls(profiles, default, sources)


def _read(path: Path) -> _CatalogFile:
    try:
        return _CatalogFile.model_validate(load_data_file(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"price catalogue {path} is invalid: {exc}", data={"file": str(path)}) from exc
