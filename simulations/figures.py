"""PNG figures of a sweep (matplotlib, headless): the paper's Figs. 6-8 and bits-to-accuracy."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .summary import Row, group_runs


def _pyplot():
    import matplotlib  # imported lazily: the core and the clients never need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _column(run: Sequence[Row], key: str) -> np.ndarray:
    return np.array([float(r.get(key, np.nan)) for r in run], dtype=np.float64)  # type: ignore[arg-type]


def statistics_figure(rounds: Iterable[Row], layers: Iterable[Row], policy: str, path: Path) -> None:
    """Fig. 6-like: ``sx2`` and ``s2`` per round, in total and per layer, for one run."""
    plt = _pyplot()
    run = next(v for (p, _), v in sorted(group_runs(rounds).items()) if p == policy)
    seed = int(float(run[0]["seed"]))  # type: ignore[arg-type]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    r = _column(run, "round")
    left.semilogy(r, _column(run, "sx2_total"), "o-", label=r"$\sum_l n_l\,\sigma_{x,l}^2$ (global)")
    left.semilogy(r, _column(run, "s2_total"), "s-", label=r"$\sum_l n_l\,\sigma_l^2$ (noise)")
    left.set(xlabel="round", ylabel="energy per round", title=f"{policy}: totals")
    left.legend()
    mine = [row for row in layers if row["policy"] == policy and int(float(row["seed"])) == seed]  # type: ignore[arg-type]
    for layer in dict.fromkeys(str(row["layer"]) for row in mine):
        rows = sorted((row for row in mine if row["layer"] == layer), key=lambda x: float(x["round"]))  # type: ignore[arg-type]
        line = right.semilogy(_column(rows, "round"), _column(rows, "sx2"), "-", label=f"{layer} sx2")[0]
        right.semilogy(_column(rows, "round"), _column(rows, "s2"), "--", color=line.get_color(), label=f"{layer} s2")
    right.set(xlabel="round", ylabel="per coordinate", title="per layer (solid sx2, dashed s2)")
    right.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def rates_figure(rounds: Iterable[Row], policies: Sequence[str], path: Path) -> None:
    """Fig. 7-like: realized bits per round against ``R_ind``/``R_sum`` at the measured distortion."""
    plt = _pyplot()
    runs = {p: v for (p, s), v in sorted(group_runs(rounds).items()) if p in policies and s == min(
        s2 for (p2, s2) in group_runs(rounds) if p2 == p)}
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4), squeeze=False)
    for ax, (policy, run) in zip(axes[0], runs.items()):
        run = [row for row in run if float(row["round"]) > 0]  # type: ignore[arg-type]
        r = _column(run, "round")
        ax.semilogy(r, _column(run, "uplink_bits"), "k-o", ms=3, label="realized")
        ax.semilogy(r, _column(run, "r_ind_bits"), "b-", label=r"$R_{ind}$ at measured $D$")
        ax.semilogy(r, _column(run, "r_sum_bits"), "g-", label=r"$R_{sum}$ at measured $D$")
        ax.semilogy(r, _column(run, "signsgd_bits"), "r:", label="SignSGD (1 bit)")
        ax.semilogy(r, _column(run, "signsgd_r_ind_bits"), "m:", label=r"$R_{ind}(D_{sign})$")
        ax.semilogy(r, _column(run, "signsgd_r_sum_bits"), "c:", label=r"$R_{sum}(D_{sign})$")
        ax.set(xlabel="round", ylabel="uplink bits per round", title=policy)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def lambda_figure(points: Sequence[Mapping[str, float]], path: Path,
                  adaptive: Mapping[str, float] | None = None) -> None:
    """Fig. 8-like: median bits and rounds to the target against ``lambda``.

    ``adaptive`` maps other policies (the adaptive rule) to their median bits to the
    target, drawn as horizontal lines; runs that never reach the target are left out
    of the curves (they are infinite).
    """
    plt = _pyplot()
    lam = np.array([p["lambda"] for p in points])

    def finite(key: str) -> np.ndarray:
        return np.array([p[key] if math.isfinite(p[key]) else np.nan for p in points])

    fig, left = plt.subplots(figsize=(6.5, 4))
    left.plot(lam, finite("bits_to_target"), "bs-", label="fixed lambda: bits to target (median)")
    for (label, bits), style in zip((adaptive or {}).items(), ["r--", "m-.", "c:"]):
        if math.isfinite(bits):
            left.axhline(bits, color=style[0], linestyle=style[1:], label=f"{label}: bits to target")
    left.set(xscale="log", yscale="log", xlabel=r"$\lambda$", ylabel="uplink bits to target")
    right = left.twinx()
    right.plot(lam, finite("rounds_to_target"), "ko-", label="rounds to target (median)")
    right.plot(lam, [p.get("predicted_rounds", np.nan) for p in points], "k:", label="Theorem 1 shape (scaled)")
    right.set(ylabel="rounds to target")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles, [h.get_label() for h in handles], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def accuracy_figure(rounds: Iterable[Row], target: float, path: Path) -> None:
    """Test accuracy against cumulative uplink bits, one curve per policy (seed mean)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    by_policy: dict[str, list[list[Row]]] = {}
    for (policy, _), run in sorted(group_runs(rounds).items()):
        by_policy.setdefault(policy, []).append(run)
    for index, (policy, runs) in enumerate(by_policy.items()):
        length = min(len(run) for run in runs)
        bits = np.mean([_column(run[:length], "uplink_bits_cum") for run in runs], axis=0)
        acc = np.mean([_column(run[:length], "test_accuracy") for run in runs], axis=0)
        ax.plot(bits[1:], acc[1:], label=policy, ms=3, **_style(index))
    ax.axhline(target, color="grey", lw=0.8, ls=":")
    ax.set(xscale="log", xlabel="cumulative uplink bits", ylabel="test accuracy", title="bits to accuracy")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _style(index: int) -> dict[str, object]:
    """A distinct colour, marker and dash for each of up to 80 curves: ten colours
    (tab10) combined with eight markers and four dash patterns."""
    import matplotlib as mpl

    colours = mpl.colormaps["tab10"].colors
    markers, dashes = "osD^v<>P", ("-", "--", "-.", ":")
    return {"color": colours[index % 10], "marker": markers[(index // 10 + index) % 8],
            "linestyle": dashes[(index // 10) % 4]}
