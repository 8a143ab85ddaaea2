"""Time-series forecasting, in progress (issue 13): the pieces below are built and tested; the forecaster model,
its task on the training loop (`recurrent train forecast`), `recurrent forecast` and the M4 benchmark are not yet.

    data.py       series from a long CSV (id, timestamp, value, covariates) or M4's wide format, with file:line
                  errors; split in time, per-series scaling, calendar features, lags, seeded training windows
    metrics.py    M4's sMAPE, MASE, OWA, MSIS and coverage; weighted quantile loss and sample CRPS
    baselines.py  naive, seasonal naive and M4's Naive2 (reproducing the competition's published Hourly scores)
    heads.py      DeepAR's likelihood heads (Gaussian, Student-t, negative binomial) over torch.distributions,
                  the masked NLL, an MQ-RNN quantile head with the pinball loss, quantiles from sample paths
"""
