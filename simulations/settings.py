"""What one sweep runs: the experiment settings and the policy specs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_POLICIES = ("rate-aware", "float32", "signsgd", "m22=2", "qsgd=4", "topk-ef=0.5")


@dataclass(frozen=True)
class PolicySpec:
    """A policy name with its optional value: ``fixed-lambda=2`` (lambda) or ``m22=3`` (bits).

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


@dataclass(frozen=True)
class Settings:
    """One sweep: every policy in ``policies`` runs once per seed in ``seeds``.

    Defaults are the short offline MNIST experiment of ``flrd simulate``.
    """

    out_dir: Path = Path("flrd-report")
    num_clients: int = 100
    clients_per_round: int = 10
    rounds: int = 25
    policies: tuple[str, ...] = DEFAULT_POLICIES
    seeds: tuple[int, ...] = (0,)
    model: str = "mlp"
    partition: str = "iid"
    dirichlet_alpha: float = 0.5
    local_steps: int = 20
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.5
    bits: float = 2.0
    lambda_cap: float = 16.0
    target_accuracy: float = 0.9
    audit: bool = True
    round_timeout_s: float = 600.0
    client_cpus: float = 1.0
    policy_params: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_clients < 2:
            raise ValueError(f"num_clients must be >= 2, got {self.num_clients}")
        if not 2 <= self.clients_per_round <= self.num_clients:
            raise ValueError(f"clients_per_round must be in 2..num_clients={self.num_clients}, "
                             f"got {self.clients_per_round}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not 0 < self.target_accuracy <= 1:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        for text in self.policies:
            if PolicySpec.parse(text).name == "fixed-lambda" and PolicySpec.parse(text).value is None:
                raise ValueError("fixed-lambda needs its value, e.g. fixed-lambda=2")

    def client_config(self, seed: int) -> dict[str, int | float | str]:
        """Run-config entries the ClientApp reads (see ``flrd.clients.client_app``)."""
        return {"model": self.model, "partition": self.partition, "dirichlet-alpha": self.dirichlet_alpha,
                "local-steps": self.local_steps, "batch-size": self.batch_size, "lr": self.lr,
                "momentum": self.momentum, "seed": seed}
