"""The wire protocol between flrd's client mod and its strategies (no Flower imports).

The server asks for compression with explicit ``flrd.``-prefixed keys in a train
message's ConfigRecord (:class:`CompressionRequest`); the client answers with one
flrd message (``flrd.codecs.message``: every layer and its statistics) in one
``uint8`` Array named :data:`MESSAGE_ARRAY` of stype :data:`PAYLOAD_STYPE`, plus a
MetricRecord named :data:`METRICS_RECORD` holding only the client's encode time. The
server rebuilds the :class:`CompressionReport` from the message and the request;
``num-examples`` stays in the app's own metrics.
``flrd.clients`` and ``flrd.strategies`` both speak it through this module, so neither
imports the other.

Per-layer lists follow the order of the layers in the train message's ArrayRecord.

Example:
    >>> request = CompressionRequest(codec="dithered", noise_var=(0.1, 0.2), seed=7)
    >>> CompressionRequest.from_config(request.to_config()) == request
    True
    >>> CompressionRequest.from_config({"lr": 0.1}) is None
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeGuard

__all__ = [
    "AUDIT",
    "AUDIT_RECORD",
    "BITS",
    "CODEC",
    "ENCODE_SECONDS",
    "ERROR_FEEDBACK",
    "KEY_PREFIX",
    "LINK_KEY",
    "M2",
    "MESSAGE_ARRAY",
    "METRICS_RECORD",
    "NOISE_VAR",
    "NUM_EXAMPLES",
    "PAYLOAD_BITS",
    "PAYLOAD_DTYPE",
    "PAYLOAD_STYPE",
    "QNOISE",
    "RELATIVE_NOISE",
    "SEED",
    "INDEPENDENT_BITS",
    "WZ_KEYS",
    "CompressionReport",
    "CompressionRequest",
    "WynerZivLayer",
]

PAYLOAD_STYPE = "flrd.codec"
MESSAGE_ARRAY = "flrd.update"
PAYLOAD_DTYPE = "uint8"
KEY_PREFIX = "flrd."

# ConfigRecord keys, server -> client.
CODEC = "flrd.codec"
NOISE_VAR = "flrd.noise-var"
RELATIVE_NOISE = "flrd.relative-noise"
BITS = "flrd.bits"
ERROR_FEEDBACK = "flrd.error-feedback"
AUDIT = "flrd.audit"
SEED = "flrd.seed"
LINK_KEY = "flrd.link-key"
# Wyner-Ziv layers (flrd.sideinfo): per layer, step 0 codes the layer independently.
WZ_STEP = "flrd.wz-step"
WZ_COND_STD = "flrd.wz-cond-std"
WZ_KEEP = "flrd.wz-keep"
WZ_PLANES = "flrd.wz-planes"  # plane rates per layer, concatenated in WZ_RATES
WZ_RATES = "flrd.wz-rates"
WZ_TAIL_DF = "flrd.wz-tail-df"
WZ_KEYS = (WZ_STEP, WZ_COND_STD, WZ_KEEP, WZ_PLANES, WZ_RATES, WZ_TAIL_DF)
_REQUEST_KEYS = frozenset({CODEC, NOISE_VAR, RELATIVE_NOISE, BITS, ERROR_FEEDBACK, AUDIT, SEED,
                           LINK_KEY, *WZ_KEYS})

# Reply records and MetricRecord keys, client -> server.
METRICS_RECORD = "flrd.metrics"
AUDIT_RECORD = "flrd.exact-update"
PAYLOAD_BITS = "flrd.payload-bits"
M2 = "flrd.m2"
QNOISE = "flrd.qnoise"
NUM_EXAMPLES = "num-examples"
ENCODE_SECONDS = "flrd.encode-seconds"
INDEPENDENT_BITS = "flrd.independent-bits"  # audit: the same update coded without side information

ConfigValue = str | int | float | bool | list[float] | list[int]
MetricValue = int | float | list[float]


@dataclass(frozen=True)
class WynerZivLayer:
    """How one layer is coded against the server's side information
    (:func:`flrd.sideinfo.wyner_ziv.encode`).

    Attributes:
        step: quantizer step on the kept coordinates.
        cond_std: planned spread of the update around the server's side information.
        keep_prob: probability that a coordinate is coded (shared-seed subset).
        rates: syndrome bits per coded coordinate, per bit plane (1 to 16 planes).
    """

    step: float
    cond_std: float
    keep_prob: float
    rates: tuple[float, ...]

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) and v > 0 for v in (self.step, self.cond_std)):
            raise ValueError(f"step and cond_std must be finite and > 0, got {self.step}, {self.cond_std}")
        if not 0 < self.keep_prob <= 1:
            raise ValueError(f"keep_prob must be in (0, 1], got {self.keep_prob}")
        if not 1 <= len(self.rates) <= 16 or not all(0 <= r <= 1 for r in self.rates):
            raise ValueError(f"need 1 to 16 plane rates in [0, 1], got {self.rates}")


@dataclass(frozen=True)
class CompressionRequest:
    """What the server asks one client to send for one round.

    Attributes:
        codec: name for ``flrd.codecs.get`` (e.g. ``"dithered"``, ``"sign"``).
        noise_var: per-layer target of the per-coordinate quantization-noise variance;
            the client picks the cheapest codec parameters meeting it. ``0.0`` asks for
            an exact (float32) layer.
        relative_noise: target as a multiple of each layer's own ``m2`` (the policy's
            warm-up, before any variance estimate exists).
        bits: bits per coordinate for codecs parameterized by rate (m22, qsgd, topk).
            At most one of ``noise_var``, ``relative_noise`` and ``bits`` is set; with
            none the codec runs with its defaults.
        error_feedback: carry the compression error into the next round (client state).
        audit: also ship the exact update, outside the bit accounting (testing only).
        seed: round seed; clients mix in their node id and the layer index.
        link_key: a node-config key (e.g. ``partition-id``) whose integer value the client
            reports as :data:`LINK_KEY` beside its payload, so that the server can price
            its link (water-filling); None: nothing is reported.
        wyner_ziv: per layer, the Wyner-Ziv code to use instead of the dithered codec
            (None: that layer independently); needs ``noise_var``. In audit mode the
            client also reports the size of the independent encoding.
        wz_tail_df: the Wyner-Ziv payloads' residual law (0 Gaussian, else Student t).
    """

    codec: str
    noise_var: tuple[float, ...] | None = None
    relative_noise: float | None = None
    bits: float | None = None
    error_feedback: bool = False
    audit: bool = False
    seed: int = 0
    link_key: str | None = None
    wyner_ziv: tuple[WynerZivLayer | None, ...] | None = None
    wz_tail_df: int = 0

    def __post_init__(self) -> None:
        if not self.codec:
            raise ValueError("codec name is empty")
        if self.wyner_ziv is not None and (self.noise_var is None or len(self.wyner_ziv) != len(self.noise_var)):
            raise ValueError("wyner_ziv needs noise_var, with one entry per layer")
        if sum(v is not None for v in (self.noise_var, self.relative_noise, self.bits)) > 1:
            raise ValueError("set at most one of noise_var, relative_noise and bits")
        if self.noise_var is not None and not all(
            math.isfinite(v) and v >= 0.0 for v in self.noise_var
        ):
            raise ValueError(f"noise_var must be finite and >= 0, got {self.noise_var}")
        for name in ("relative_noise", "bits"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value}")

    def to_config(self) -> dict[str, ConfigValue]:
        """Entries to merge into a train ConfigRecord."""
        config: dict[str, ConfigValue] = {
            CODEC: self.codec,
            ERROR_FEEDBACK: self.error_feedback,
            AUDIT: self.audit,
            SEED: int(self.seed),
        }
        if self.link_key is not None:
            config[LINK_KEY] = self.link_key
        if self.noise_var is not None:
            config[NOISE_VAR] = [float(v) for v in self.noise_var]
        if self.relative_noise is not None:
            config[RELATIVE_NOISE] = float(self.relative_noise)
        if self.bits is not None:
            config[BITS] = float(self.bits)
        if self.wyner_ziv is not None:
            layers = self.wyner_ziv
            config[WZ_STEP] = [float(c.step) if c else 0.0 for c in layers]
            config[WZ_COND_STD] = [float(c.cond_std) if c else 0.0 for c in layers]
            config[WZ_KEEP] = [float(c.keep_prob) if c else 0.0 for c in layers]
            config[WZ_PLANES] = [len(c.rates) if c else 0 for c in layers]
            config[WZ_RATES] = [float(r) for c in layers if c for r in c.rates] or [0.0]
            config[WZ_TAIL_DF] = int(self.wz_tail_df)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> CompressionRequest | None:
        """Parse the ``flrd.`` keys of a ConfigRecord; ``None`` when there are none.

        Raises ValueError on unknown ``flrd.`` keys or ill-typed values.
        """
        keys = {key for key in config if key.startswith(KEY_PREFIX)}
        if not keys:
            return None
        if unknown := keys - _REQUEST_KEYS:
            raise ValueError(f"unknown flrd config keys: {sorted(unknown)}")
        if not isinstance(codec := config.get(CODEC), str):
            raise ValueError(f"{CODEC} must be a string, got {codec!r}")
        noise_var = config.get(NOISE_VAR)
        if noise_var is not None and not (
            isinstance(noise_var, list) and all(_is_number(v) for v in noise_var)
        ):
            raise ValueError(f"{NOISE_VAR} must be a list of numbers, got {noise_var!r}")
        scalars = {key: config.get(key) for key in (RELATIVE_NOISE, BITS)}
        if not all(v is None or _is_number(v) for v in scalars.values()):
            raise ValueError(f"{RELATIVE_NOISE} and {BITS} must be numbers, got {scalars}")
        error_feedback = config.get(ERROR_FEEDBACK, False)
        audit = config.get(AUDIT, False)
        if not (isinstance(error_feedback, bool) and isinstance(audit, bool)):
            flags = {ERROR_FEEDBACK: error_feedback, AUDIT: audit}
            raise ValueError(f"{ERROR_FEEDBACK} and {AUDIT} must be booleans, got {flags}")
        seed = config.get(SEED, 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"{SEED} must be an integer, got {seed!r}")
        link_key = config.get(LINK_KEY)
        if link_key is not None and not isinstance(link_key, str):
            raise ValueError(f"{LINK_KEY} must be a string, got {link_key!r}")
        wyner_ziv, tail_df = _wyner_ziv_from(config)
        return cls(
            wyner_ziv=wyner_ziv,
            wz_tail_df=tail_df,
            codec=codec,
            noise_var=None if noise_var is None else tuple(float(v) for v in noise_var),
            relative_noise=_optional_float(scalars[RELATIVE_NOISE]),
            bits=_optional_float(scalars[BITS]),
            error_feedback=error_feedback,
            audit=audit,
            seed=seed,
            link_key=link_key,
        )


@dataclass(frozen=True)
class CompressionReport:
    """What is known of one client's compressed update.

    On the server it is rebuilt from the message: ``m2`` is the transmitted one-byte
    statistic and ``qnoise`` the codec's expected noise at that ``m2`` (realized noise
    for baseline codecs). The client's own copy holds the exact ``m2``.
    ``to_metrics``/``from_metrics`` serialize it for tools that want it as a record;
    the mod no longer sends it.

    Attributes:
        payload_bits: ``8 * total payload bytes`` of the round (framing included).
        m2: per layer, ``||g_l||^2 / n_l`` of the exact update ``g``.
        qnoise: per layer, the noise ``||g_hat_l - g_l||^2 / n_l`` (expected or realized).
        num_examples: local training examples (the FedAvg weight).
        encode_seconds: wall time the client spent encoding.
        framing_bytes: message framing (header and check).
        stats_bytes: statistics carried inside the message.

    Example:
        >>> r = CompressionReport(payload_bits=64, m2=(1.0,), qnoise=(0.1,), num_examples=5)
        >>> CompressionReport.from_metrics(r.to_metrics(), num_layers=1) == r
        True
    """

    payload_bits: int
    m2: tuple[float, ...]
    qnoise: tuple[float, ...]
    num_examples: float
    encode_seconds: float = 0.0
    framing_bytes: int = 0
    stats_bytes: int = 0

    def to_metrics(self) -> dict[str, MetricValue]:
        """Entries of the reply's :data:`METRICS_RECORD`."""
        return {
            PAYLOAD_BITS: int(self.payload_bits),
            M2: [float(v) for v in self.m2],
            QNOISE: [float(v) for v in self.qnoise],
            NUM_EXAMPLES: float(self.num_examples),
            ENCODE_SECONDS: float(self.encode_seconds),
        }

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, object], num_layers: int) -> CompressionReport:
        """Parse and check a reply's report; ValueError names what is wrong."""
        bits = metrics.get(PAYLOAD_BITS)
        if isinstance(bits, bool) or not isinstance(bits, int) or bits < 0:
            raise ValueError(f"{PAYLOAD_BITS} must be a non-negative integer, got {bits!r}")
        lists = {}
        for key in (M2, QNOISE):
            values = metrics.get(key)
            if not isinstance(values, list) or len(values) != num_layers:
                raise ValueError(f"{key} must list {num_layers} values, got {values!r}")
            if not all(_is_number(v) and math.isfinite(v) and v >= 0 for v in values):
                raise ValueError(f"{key} must be finite and >= 0, got {values!r}")
            lists[key] = tuple(float(v) for v in values)
        examples = metrics.get(NUM_EXAMPLES)
        if not (_is_number(examples) and math.isfinite(examples) and examples > 0):
            raise ValueError(f"{NUM_EXAMPLES} must be a positive number, got {examples!r}")
        seconds = metrics.get(ENCODE_SECONDS, 0.0)  # optional: older clients omit it
        if not (_is_number(seconds) and math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"{ENCODE_SECONDS} must be a finite number >= 0, got {seconds!r}")
        return cls(bits, lists[M2], lists[QNOISE], float(examples), float(seconds))


def _wyner_ziv_from(config: Mapping[str, object]) -> tuple[tuple[WynerZivLayer | None, ...] | None, int]:
    """The Wyner-Ziv layers of a ConfigRecord (all of :data:`WZ_KEYS` or none)."""
    present = [key for key in WZ_KEYS if key in config]
    if not present:
        return None, 0
    if len(present) != len(WZ_KEYS):
        raise ValueError(f"Wyner-Ziv keys come together: missing {sorted(set(WZ_KEYS) - set(present))}")
    lists: dict[str, list[int | float]] = {}
    for key in (WZ_STEP, WZ_COND_STD, WZ_KEEP, WZ_PLANES, WZ_RATES):
        value = config[key]
        if not (isinstance(value, list) and all(_is_number(x) for x in value)):
            raise ValueError(f"{key} must be a list of numbers, got {value!r}")
        lists[key] = list(value)
    steps, stds, keeps, planes, rates = (lists[k] for k in (WZ_STEP, WZ_COND_STD, WZ_KEEP, WZ_PLANES, WZ_RATES))
    tail_df = config[WZ_TAIL_DF]
    if isinstance(tail_df, bool) or not isinstance(tail_df, int):
        raise ValueError(f"{WZ_TAIL_DF} must be an integer, got {tail_df!r}")
    if not len(steps) == len(stds) == len(keeps) == len(planes):
        raise ValueError("Wyner-Ziv lists differ in length")
    counts = [p for p in planes if isinstance(p, int) and 0 <= p <= 16]
    if len(counts) != len(planes):
        raise ValueError(f"{WZ_PLANES} must be integers in [0, 16], got {planes!r}")
    layers: list[WynerZivLayer | None] = []
    pos = 0
    for step, std, keep, count in zip(steps, stds, keeps, counts):
        if step == 0:
            layers.append(None)
            continue
        layers.append(WynerZivLayer(float(step), float(std), float(keep),
                                    tuple(float(r) for r in rates[pos : pos + count])))
        pos += count
    if pos != len(rates) and not (pos == 0 and rates == [0.0]):
        raise ValueError(f"{WZ_RATES} holds {len(rates)} rates, {WZ_PLANES} declares {pos}")
    return tuple(layers), tail_df


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
