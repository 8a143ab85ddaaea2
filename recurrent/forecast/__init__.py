"""Time-series forecasting (issue 13, in progress): `recurrent train forecast` trains one global DeepAR model for
every series of a file on the one training loop. `recurrent forecast` (forecasts from the end of the data) and the
metrics table of `recurrent evaluate` are not built yet; benchmarks/m4_hourly.py scores the model from Python.

    data.py       series from a long CSV (id, timestamp, value, covariates) or M4's wide format, with file:line
                  errors; split in time, per-series scaling, calendar features, lags, seeded training windows
    task.py       the forecast task: TrainForecastConfig, ForecastTask (validation: the last horizon, in time)
    heads.py      DeepAR's likelihood heads (Gaussian, Student-t, negative binomial) over torch.distributions,
                  the masked NLL, an MQ-RNN quantile head with the pinball loss, quantiles from sample paths
    metrics.py    M4's sMAPE, MASE, OWA, MSIS and coverage; weighted quantile loss and sample CRPS
    baselines.py  naive, seasonal naive and M4's Naive2 (reproducing the competition's published Hourly scores)
The model is recurrent/models/forecaster.py.
"""
