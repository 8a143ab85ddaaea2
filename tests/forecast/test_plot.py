"""recurrent/forecast/plot.py: the PNG is written at the expected size and holds a drawing; the bands pair levels."""
import numpy as np
import pytest

from recurrent.forecast.data import Series
from recurrent.forecast.plot import DPI, PANEL, WIDTH, central_bands, plot_forecasts

matplotlib = pytest.importorskip("matplotlib", reason="matplotlib is not installed")


def test_central_bands():
    assert central_bands([0.05, 0.25, 0.5, 0.75, 0.95]) == [(0, 4), (1, 3)]  # 90%, then 50%
    assert central_bands([0.025, 0.1, 0.3, 0.5, 0.7, 0.9, 0.975]) == [(0, 6), (2, 4)]  # 95%, then 40% (nearest 50%)
    assert central_bands([0.1, 0.5, 0.8]) == [(0, 2)]  # nothing pairs: the outermost levels
    assert central_bands([0.5]) == []


@pytest.mark.parametrize("timed", [True, False])
def test_plot_is_written(tmp_path, timed):
    n, H, levels = 50, 6, (0.05, 0.25, 0.5, 0.75, 0.95)
    start = np.datetime64("2024-01-01T00:00:00")
    series, times, quantiles = [], [], []
    for k in range(2):
        values = (10 + 3 * np.sin(np.arange(n) / 4) + k).astype(np.float32)
        stamps = start + np.arange(n) * np.timedelta64(1, "h") if timed else None
        series.append(Series(f"s{k}", values, stamps, step=np.timedelta64(3600, "s") if timed else None))
        times.append(stamps[-1] + np.arange(1, H + 1) * np.timedelta64(1, "h") if timed else np.arange(n, n + H))
        quantiles.append(values[-1] + np.linspace(-2, 2, len(levels))[None, :] * np.arange(1, H + 1)[:, None])
    path = tmp_path / "f.png"
    plot_forecasts(path, series, times, np.stack(quantiles), levels, truth=[np.full(H, 11.0)] * 2, season=24)
    image = matplotlib.image.imread(path)  # (rows, columns, RGBA)
    assert image.shape[:2] == (round(2 * PANEL * DPI), WIDTH * DPI)
    rgb = image[..., :3].reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 20  # lines, bands and text, not one colour
    red = (rgb[:, 0] > 0.7) & (rgb[:, 1] < 0.4) & (rgb[:, 2] < 0.4)
    assert red.sum() > 50  # the truth is drawn
