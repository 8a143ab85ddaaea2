"""Time-series forecasting: `recurrent train forecast` trains one global model for every series of a file on the one
training loop; `recurrent forecast RUN` forecasts from the end of the data; `recurrent evaluate RUN` scores a run
against M4's baselines (and statsforecast's, when installed) in one table.

    data.py       series from a long CSV (id, timestamp, value, covariates) or M4's wide format, with file:line
                  errors; split in time, per-series scaling, calendar features, lags, seeded training windows
    task.py       the forecast task: TrainForecastConfig, ForecastTask (validation: the last horizon, in time)
    heads.py      DeepAR's likelihood heads (Gaussian, Student-t, negative binomial) over torch.distributions,
                  the masked NLL, MQ-RNN's monotone quantiles and pinball loss, quantiles from sample paths
    metrics.py    M4's sMAPE, MASE, OWA, MSIS and coverage; weighted quantile loss and sample CRPS
    baselines.py  naive, seasonal naive and M4's Naive2 (reproducing the competition's published Hourly scores)
    compare.py    the reference methods (and statsforecast's AutoETS and AutoTheta) and the scored table
    plot.py       history, truth, median and interval bands of chosen series (PNG)
The models are recurrent/models/forecaster.py (DeepAR; `build` picks the architecture) and recurrent/models/mqrnn.py
(MQ-RNN with ES-RNN's local normalisation); recurrent/inference/forecast.py uses a trained run.
"""
