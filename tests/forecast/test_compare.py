"""recurrent/forecast/compare.py: the reference methods against baselines.py called directly, the table's numbers
against metrics.py per series, and statsforecast's methods where it is installed."""
import numpy as np
import pytest

from recurrent.errors import UserError
from recurrent.forecast import compare
from recurrent.forecast.baselines import naive, naive2, naive_interval, seasonal_naive
from recurrent.forecast.metrics import (
    coverage,
    mase,
    mean_weighted_quantile_loss,
    msis,
    smape,
)

H, M = 8, 12


def histories(n: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [50 + 10 * np.sin(2 * np.pi * np.arange(60 + 7 * i) / M) + rng.normal(0, 2, 60 + 7 * i) for i in range(n)]


def test_baselines_are_baselines_py():
    methods = compare.baselines(H, M, level=0.8)
    for x in histories():
        assert np.array_equal(methods["naive2"](x)[0], naive2(x, H, M))
        assert np.array_equal(methods["snaive"](x)[0], seasonal_naive(x, H, M))
        point, (lo, hi) = methods["naive"](x)
        assert np.array_equal(point, naive(x, H))
        assert np.array_equal(lo, naive_interval(x, H, 0.8)[0]) and np.array_equal(hi, naive_interval(x, H, 0.8)[1])
        assert methods["naive2"](x)[1] is None


def test_score_matches_metrics_per_series():
    insample = histories()
    rng = np.random.default_rng(2)
    y = np.stack([x[-M:][:H] + rng.normal(0, 2, H) for x in insample])  # (N, H)
    methods = compare.baselines(H, M)
    forecasts = {name: compare.run(methods[name], insample) for name in ("naive2", "naive")}
    q = np.stack([forecasts["naive"].point + k for k in range(-4, 5)])  # 9 increasing quantile forecasts
    forecasts["naive"] = forecasts["naive"]._replace(quantiles=q)
    rows = {r.method: r for r in compare.score(insample, y, forecasts, M)}
    points = {name: f.point for name, f in forecasts.items()}
    for name, r in rows.items():
        s = np.mean([smape(t, f) for t, f in zip(y, points[name])])
        a = np.mean([mase(x, t, f, M) for x, t, f in zip(insample, y, points[name])])
        assert r.smape == pytest.approx(s) and r.mase == pytest.approx(a)
    s0, a0 = rows["naive2"].smape, rows["naive2"].mase
    assert rows["naive2"].owa == pytest.approx(1.0)
    assert rows["naive"].owa == pytest.approx((rows["naive"].smape / s0 + rows["naive"].mase / a0) / 2)
    lo, hi = forecasts["naive"].interval
    assert rows["naive"].msis == pytest.approx(np.mean([msis(x, t, a, b, M) for x, t, a, b in zip(insample, y, lo, hi)]))
    assert rows["naive"].coverage == pytest.approx(np.mean(coverage(y, lo, hi)))
    assert rows["naive"].wql == pytest.approx(mean_weighted_quantile_loss(y, q, compare.WQL_LEVELS))
    assert rows["naive2"].msis is rows["naive2"].wql is None
    text = compare.format_table(list(rows.values()))
    assert text.splitlines()[2].startswith(f"| naive2 | {s0:.3f} | {a0:.3f} | 1.000 | – | – | – |")


def test_a_failing_method_names_the_series():
    def broken(x):
        raise RuntimeError("no fit")

    with pytest.raises(UserError, match="auto_ets failed on series b: no fit"):
        compare.run(broken, histories(2), ["b", "a"], "auto_ets")


def test_statsforecast_methods():
    pytest.importorskip("statsforecast", reason="statsforecast is not installed (the forecast-bench extra)")
    methods = compare.statsforecast_methods(H, M, level=0.95)
    assert sorted(methods) == ["auto_ets", "auto_theta"]
    x = histories(1)[0]
    for method in methods.values():
        point, (lo, hi) = method(x)
        assert point.shape == lo.shape == hi.shape == (H,) and np.all(lo <= point) and np.all(point <= hi)
