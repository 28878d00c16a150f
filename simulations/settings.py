"""What one sweep runs: the harness's own settings around the App's :class:`RunConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flrd.config import RunConfig

_VALUE_FIELDS = {"fixed-lambda": "fixed_lambda", "trust-region": "noise_fraction"}  # others: bits

DEFAULT_POLICIES = ("trust-region", "rate-aware", "float32", "signsgd", "m22=2", "qsgd=4", "topk-ef=0.5")


@dataclass(frozen=True)
class PolicySpec:
    """A policy name with its optional value: ``fixed-lambda=2`` (lambda),
    ``trust-region=0.03`` (noise fraction) or ``m22=3`` (bits).

    Examples
    --------
    >>> PolicySpec.parse("m22=3")
    PolicySpec(name='m22', value=3.0)
    """

    name: str
    value: float | None = None

    @classmethod
    def parse(cls, text: str) -> PolicySpec:
        name, _, value = text.partition("=")
        return cls(name.strip(), float(value) if value else None)

    @property
    def label(self) -> str:
        """Name used in the records (``m22=3``, or ``m22`` without a value)."""
        return self.name if self.value is None else f"{self.name}={self.value:g}"

    def run_config(self, base: RunConfig, seed: int) -> RunConfig:
        """``base`` with this policy, its value (lambda, noise fraction or bits) and ``seed``."""
        changes: dict[str, object] = {"policy": self.name, "seed": seed}
        if self.value is not None:
            changes[_VALUE_FIELDS.get(self.name, "bits")] = self.value
        return base.replace(**changes)


@dataclass(frozen=True)
class Settings:
    """One sweep: every policy in ``policies`` runs once per seed in ``seeds``.

    ``run`` holds everything the App itself reads (rounds, model, partition, local
    training, policy knobs); its defaults are :class:`~flrd.config.RunConfig`'s. The
    harness sets the sampling (``clients_per_round`` of ``num_clients``) and audits by
    default, so that the realized distortion is measured.
    """

    out_dir: Path = Path("flrd-report")
    num_clients: int = 100
    clients_per_round: int = 10
    policies: tuple[str, ...] = DEFAULT_POLICIES
    seeds: tuple[int, ...] = (0,)
    target_accuracy: float = 0.9
    client_cpus: float = 1.0
    run: RunConfig = field(default_factory=lambda: RunConfig(audit=True))

    def __post_init__(self) -> None:
        if self.num_clients < 2:
            raise ValueError(f"num_clients must be >= 2, got {self.num_clients}")
        if not 2 <= self.clients_per_round <= self.num_clients:
            raise ValueError(f"clients_per_round must be in 2..num_clients={self.num_clients}, "
                             f"got {self.clients_per_round}")
        if not 0 < self.target_accuracy <= 1:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if not self.policies or not self.seeds:
            raise ValueError("a sweep needs at least one policy and one seed")
        for text in self.policies:
            spec = PolicySpec.parse(text)
            if spec.name == "fixed-lambda" and spec.value is None:
                raise ValueError("fixed-lambda needs its value, e.g. fixed-lambda=2")
            spec.run_config(self.app_config(), 0)  # names and values checked now, not mid-sweep

    @property
    def rounds(self) -> int:
        """Server rounds per run."""
        return self.run.num_server_rounds

    def app_config(self) -> RunConfig:
        """The App's run config with this sweep's sampling."""
        return self.run.replace(fraction_train=self.clients_per_round / self.num_clients,
                                min_train_nodes=self.clients_per_round, fraction_evaluate=0.0)
