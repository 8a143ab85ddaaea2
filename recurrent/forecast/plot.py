"""Forecasts drawn against their history: one panel per series, the last few seasons of history, the truth where
it is known, the median and the central intervals the quantile levels allow (50% and 90% for 0.05, 0.25, 0.5,
0.75, 0.95; else the outermost levels). `recurrent forecast --plot` and `recurrent evaluate --plot` draw them.

    plot_forecasts("f.png", series, out.times, out.quantiles, out.levels, season=24)           # future unknown
    plot_forecasts("f.png", history, times, quantiles, levels, truth=[s.values for s in test])   # scored

Key: N series, H horizon, Q quantile levels.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recurrent.forecast.data import Series

SEASONS = 3  # seasons of history drawn (at least two horizons)
WIDTH, PANEL, DPI = 10, 2.6, 100  # inches wide, inches per series, dots per inch


def plot_forecasts(path, series: Sequence[Series], times: Sequence[np.ndarray], quantiles: np.ndarray,
                   levels: Sequence[float], truth: Sequence[np.ndarray] | None = None, season: int = 1,
                   seasons: int = SEASONS) -> None:
    """Write a PNG: for series i, its history `series[i]`, the forecast quantiles (H, Q) at `times[i]` (H,)
    (datetime64 timestamps or step indices, as the series' own time axis), and `truth[i]` (H,) if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [float(q) for q in levels]
    bands = central_bands(levels)
    fig, axes = plt.subplots(len(series), 1, figsize=(WIDTH, PANEL * len(series)), dpi=DPI, squeeze=False)
    try:
        for i, (s, ax) in enumerate(zip(series, axes[:, 0])):
            H = len(times[i])
            shown = min(len(s), max(seasons * season, 2 * H))
            past = s.timestamps if s.timestamps is not None else np.arange(len(s))
            ax.plot(past[-shown:], s.values[-shown:], color="black", linewidth=1, label="history")
            for k, (lo, hi) in enumerate(bands):  # the widest first, lightest
                ax.fill_between(times[i], quantiles[i, :, lo], quantiles[i, :, hi], color="tab:blue",
                                alpha=0.25 + 0.25 * k, linewidth=0,
                                label=f"{round(100 * (levels[hi] - levels[lo]))}% interval")
            ax.plot(times[i], quantiles[i, :, levels.index(0.5)], color="navy", linewidth=1.5, label="median")
            if truth is not None:
                ax.plot(times[i], truth[i], color="tab:red", linewidth=1, label="truth")
            ax.set_title(f"series {s.id}", fontsize=10)
            ax.grid(alpha=0.3)
        axes[0, 0].legend(loc="upper left", fontsize=8, ncol=5)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def central_bands(levels: Sequence[float]) -> list[tuple[int, int]]:
    """(lower, upper) index pairs of at most two central intervals among the levels, widest first: the widest
    pair (q, 1 - q) and the one nearest 50% wide; if none pair up, the lowest and highest levels; none with a
    single level."""
    pairs = [(i, j) for i, q in enumerate(levels) if q < 0.5
             for j, r in enumerate(levels) if abs(q + r - 1) < 1e-9]
    if not pairs:
        return [(0, len(levels) - 1)] if len(levels) > 1 and levels[0] < levels[-1] else []
    pairs.sort(key=lambda p: levels[p[0]])  # widest first
    widest, rest = pairs[0], pairs[1:]
    if not rest:
        return [widest]
    return [widest, min(rest, key=lambda p: abs(levels[p[1]] - levels[p[0]] - 0.5))]
