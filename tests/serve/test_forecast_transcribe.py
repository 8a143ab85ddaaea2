"""/forecast and /transcribe on tiny trained runs: each reply against the library and the CLI on the same input
(`recurrent forecast` with the same seed, `recurrent transcribe` of the same file), and a 4xx JSON error naming the
field for each kind of bad request."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import soundfile as sf

from recurrent.cli.main import main
from recurrent.forecast.data import Series
from tests.serve.conftest import HORIZON, SPEECH_TEXTS, tone_wav


def as_request(series: list[Series]) -> list[dict]:
    """Series -> the JSON a client sends: null for a missing value, ISO timestamps when the series has them."""
    out = []
    for s in series:
        item = {"id": s.id, "values": [None if np.isnan(v) else float(v) for v in s.values]}
        if s.timestamps is not None:
            item["timestamps"] = [str(t) for t in s.timestamps]
        out.append(item)
    return out


def quantiles_of(reply: dict) -> np.ndarray:
    """(N, H, Q) from a /forecast reply, in its levels' order."""
    return np.array([[f["quantiles"][f"{q:g}"] for q in reply["levels"]] for f in reply["forecasts"]]).transpose(0, 2, 1)


def test_models_lists_forecasters_and_recognisers(client_more):
    models = {m["name"]: m for m in client_more.get("/models").json()}
    assert {n: (m["task"], m["endpoint"]) for n, m in models.items()} == {
        "hourly": ("forecast", "/forecast"), "wide": ("forecast", "/forecast"), "embedded": ("forecast", "/forecast"),
        "speech": ("speech", "/transcribe"), "stream": ("speech", "/transcribe")}
    assert models["hourly"]["details"]["horizon"] == HORIZON and models["hourly"]["details"]["timestamps"]
    assert models["hourly"]["details"]["ids"] is None and models["embedded"]["details"]["ids"] == ["s0", "s1", "s2"]
    assert not models["wide"]["details"]["timestamps"] and models["wide"]["details"]["season"] == 6
    assert models["stream"]["details"]["stream"] and not models["speech"]["details"]["stream"]
    assert set(models["speech"]["details"]["characters"]) == set("".join(SPEECH_TEXTS))
    paths = client_more.get("/openapi.json").json()["paths"]
    assert "/forecast" in paths and "audio/wav" in paths["/transcribe"]["post"]["requestBody"]["content"]


def test_forecast_is_recurrent_forecast_with_the_same_seed(client_more, served_more, forecast_runs, tmp_path):
    data, run = forecast_runs["hourly"]
    forecaster = served_more["hourly"].model
    series = forecaster.read(data).series
    reply = client_more.post("/forecast", json={"model": "hourly", "series": as_request(series),
                                                "quantiles": [0.05, 0.95], "samples": 50, "seed": 3})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    expected = forecaster.forecast(series, (0.05, 0.95), num_samples=50, seed=3)
    assert body["levels"] == [0.05, 0.5, 0.95] and body["horizon"] == HORIZON
    np.testing.assert_array_equal(quantiles_of(body), expected.quantiles)  # float64 through JSON: exact
    assert [f["timestamps"] for f in body["forecasts"]] == [[str(t) for t in times] for times in expected.times]
    assert body["forecasts"][0]["timestamps"][0] == "2024-01-03T12:00:00"  # 60 hours after the first
    out = tmp_path / "f.csv"  # the command line, on the file itself
    assert main(["forecast", str(run), "--data", str(data), "--quantiles", "0.05,0.95", "--samples", "50",
                 "--seed", "3", "--out", str(out)]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    got = [(f["id"], t, f["quantiles"][q][h]) for f in body["forecasts"] for h, t in enumerate(f["timestamps"])
           for q in ("0.05", "0.5", "0.95")]
    written = [(r["id"], r["timestamp"], float(r[f"q{q}"])) for r in rows for q in ("0.05", "0.5", "0.95")]
    assert [g[:2] for g in got] == [w[:2] for w in written]
    np.testing.assert_allclose([g[2] for g in got], [w[2] for w in written], rtol=1e-6)  # the CSV's %.7g
    again = client_more.post("/forecast", json={"model": "hourly", "series": as_request(series),
                                                "quantiles": [0.05, 0.95], "samples": 50, "seed": 4}).json()
    assert not np.array_equal(quantiles_of(again), expected.quantiles)  # another seed, other draws


def test_forecast_without_timestamps_missing_values_and_a_short_series(client_more, served_more):
    forecaster = served_more["wide"].model
    rng = np.random.default_rng(5)
    values = [20 + 2 * np.sin(np.arange(n) / 2) + rng.normal(0, 0.3, n) for n in (30, 4)]  # 4 < past_length
    values[0][[3, 10]] = np.nan
    series = [Series("W0", v.astype(np.float32)) for v in values[:1]] + [Series("short", values[1].astype(np.float32))]
    assert len(series[1]) < forecaster.model.past_length
    reply = client_more.post("/forecast", json={"model": "wide", "series": as_request(series), "seed": 7}).json()
    expected = forecaster.forecast(series, (0.1, 0.5, 0.9), num_samples=200, seed=7)  # the request's defaults
    assert reply["levels"] == [0.1, 0.5, 0.9]
    np.testing.assert_array_equal(quantiles_of(reply), expected.quantiles)
    assert [f["steps"] for f in reply["forecasts"]] == [list(range(30, 30 + HORIZON)), list(range(4, 4 + HORIZON))]
    assert all(f["timestamps"] is None for f in reply["forecasts"])
    q = quantiles_of(reply)
    assert (np.diff(q, axis=2) >= 0).all()  # quantiles increase with the level


def test_an_id_embedding_forecasts_its_training_ids(client_more, served_more, forecast_runs):
    data, _ = forecast_runs["embedded"]
    forecaster = served_more["embedded"].model
    series = forecaster.read(data).series[::-1]  # any order: each id picks its own row of the embedding
    reply = client_more.post("/forecast", json={"model": "embedded", "series": as_request(series), "samples": 20})
    assert reply.status_code == 200, reply.text
    expected = forecaster.forecast(series, (0.1, 0.9), num_samples=20, seed=0)
    np.testing.assert_array_equal(quantiles_of(reply.json()), expected.quantiles)


HOURS = [f"2024-01-01T{h:02d}:00" for h in range(4)]
ONE = {"id": "a", "values": [1.0, 2.0, 3.0, 4.0], "timestamps": HOURS}
PLAIN = {"id": "a", "values": [1.0, 2.0, 3.0, 4.0]}
BAD_FORECASTS = [  # (body, status, field)
    ({"series": [ONE], "quantiles": [0]}, 422, "quantiles.0"),
    ({"series": [ONE], "quantiles": [1.5]}, 422, "quantiles.0"),
    ({"series": [ONE], "quantiles": [0.1, "0.9"]}, 422, "quantiles.1"),
    ({"series": [ONE], "quantiles": [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8]}, 422, "quantiles"),  # over the limit
    ({"series": [ONE], "quantiles": []}, 422, "quantiles"),
    ({"series": [ONE], "samples": 0}, 422, "samples"),
    ({"series": [ONE], "samples": 401}, 422, "samples"),  # over the limit
    ({"series": [ONE], "seed": -1}, 422, "seed"),
    ({"series": []}, 422, "series"),
    ({"series": [{**ONE, "id": f"s{i}"} for i in range(6)]}, 422, "series"),  # over the limit
    ({}, 422, "series"),
    ({"series": [ONE, ONE]}, 422, "series.1.id"),  # a repeated id
    ({"series": [{**ONE, "values": [1.0, "2", 3.0, 4.0]}]}, 422, "series.0.values.1"),
    ({"series": [{**ONE, "values": [1.0, float("inf"), 3.0, 4.0]}]}, 422, "series.0.values.1"),
    ({"series": [{**ONE, "values": [1.0, float("nan"), 3.0, 4.0]}]}, 422, "series.0.values.1"),
    ({"series": [{**ONE, "values": [1.0, 1e39, 3.0, 4.0]}]}, 422, "series.0.values.1"),  # not a float32
    ({"series": [{**ONE, "values": [], "timestamps": []}]}, 422, "series.0.values"),
    ({"series": [{**ONE, "values": [None] * 4}]}, 422, "series.0.values"),  # nothing observed
    ({"series": [{**ONE, "values": [1.0] * 501, "timestamps": None}]}, 422, "series.0.values"),  # over the limit
    ({"series": [{**ONE, "timestamps": HOURS[:3]}]}, 422, "series.0.timestamps"),  # one per value
    ({"series": [{**ONE, "timestamps": [*HOURS[:3], "2024-01-01T05:00"]}]}, 422, "series.0.timestamps"),  # irregular
    ({"series": [{**ONE, "timestamps": [*HOURS[:3], HOURS[2]]}]}, 422, "series.0.timestamps"),  # repeated
    ({"series": [{**ONE, "timestamps": [*HOURS[:3], "soon"]}]}, 422, "series.0.timestamps"),  # not ISO 8601
    ({"series": [PLAIN]}, 422, "series.0.timestamps"),  # the run was trained with timestamps
    ({"series": [{**ONE, "timestamps": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]}]}, 422,
     "series.0.timestamps"),  # daily data for an hourly run
    ({"series": [{"id": "a", "values": [1.0], "timestamps": HOURS[:1]}]}, 422, "series.0.timestamps"),  # no step
    ({"series": [ONE], "horizon": 3}, 422, "horizon"),  # unknown field: the horizon is the run's
    ({"model": "nope", "series": [ONE]}, 404, "model"),
    ({"model": "speech", "series": [ONE]}, 422, "model"),  # a recogniser, not a forecaster
    ({"model": "wide", "series": [ONE]}, 422, "series.0.timestamps"),  # trained without timestamps
    ({"model": "embedded", "series": [{**ONE, "id": "s9"}]}, 422, "series.0.id"),  # an id it never saw
]


@pytest.mark.parametrize("body, status, field", BAD_FORECASTS)
def test_bad_forecast_request_is_a_4xx_naming_the_field(client_more, body, status, field):
    content = json.dumps(body)  # NaN and Infinity as Python writes them (httpx's json= refuses them)
    reply = client_more.post("/forecast", content=content, headers={"Content-Type": "application/json"})
    assert reply.status_code == status, reply.text
    assert reply.json()["field"] == field and field in reply.json()["error"]


# --- /transcribe ------------------------------------------------------------------------------------------------


def transcribe(client, data: bytes, **params):
    return client.post("/transcribe", params=params, content=data, headers={"Content-Type": "audio/wav"})


@pytest.fixture(scope="module")
def wavs(tmp_path_factory, speech_runs):
    """The training audio, and the same utterances at 22.05 kHz in stereo (resampled and downmixed on the way in)."""
    root = tmp_path_factory.mktemp("upload")
    train = [speech_runs["speech"].parent / "wav" / f"{i}.wav" for i in range(len(SPEECH_TEXTS))]
    other = [tone_wav(root / f"{i}.wav", text, rate=22050, channels=2) for i, text in enumerate(SPEECH_TEXTS)]
    return train + other


@pytest.mark.parametrize("model, beam, stream", [("speech", 1, False), ("speech", 3, False), ("stream", 1, True),
                                                 ("stream", 2, False)])
def test_transcribe_is_recurrent_transcribe_of_the_same_file(client_more, served_more, speech_runs, wavs, capsys,
                                                             model, beam, stream):
    rec = served_more[model].model
    texts = []
    for path in wavs:
        reply = transcribe(client_more, path.read_bytes(), model=model, beam=beam, stream=stream)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["text"] == rec.transcribe(path, beam, stream) and body["model"] == model
        assert body["seconds"] == pytest.approx(sf.info(str(path)).duration)
        texts.append(body["text"])
    assert any(texts), "every transcript is empty: the comparison would show nothing"
    capsys.readouterr()
    args = ["--beam", str(beam)] + (["--stream"] if stream else [])
    assert main(["transcribe", str(speech_runs[model]), *map(str, wavs), *args]) == 0
    assert capsys.readouterr().out.splitlines() == texts


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(seconds * rate), np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


BAD_AUDIO = [  # (query parameters, body, content type, status, field)
    ({"beam": 0}, None, "audio/wav", 422, "beam"),
    ({"beam": 5}, None, "audio/wav", 422, "beam"),  # over --max-beam
    ({"beam": "wide"}, None, "audio/wav", 422, "beam"),
    ({"stream": "true"}, None, "audio/wav", 422, "stream"),  # a bidirectional run cannot stream
    ({"language": "en"}, None, "audio/wav", 422, "language"),  # unknown parameter
    ({"model": "hourly"}, None, "audio/wav", 422, "model"),  # a forecaster
    ({"model": "nope"}, None, "audio/wav", 404, "model"),
    ({}, b"", "audio/wav", 422, "audio"),  # empty
    ({}, b"RIFF not really a wave file", "audio/wav", 422, "audio"),  # not audio
    ({}, wav_bytes(0), "audio/wav", 422, "audio"),  # a header and no samples
    ({}, wav_bytes(3.5), "audio/wav", 422, "audio"),  # 3.5 s, over the 3 s limit
    ({}, wav_bytes(13, 16000), "audio/wav", 413, "body"),  # over the byte limit
    ({}, b'{"audio": "UklGR..."}', "application/json", 415, "audio"),  # JSON, not the file
]


@pytest.mark.parametrize("params, data, content_type, status, field", BAD_AUDIO)
def test_bad_transcribe_request_is_a_4xx_naming_the_field(client_more, wavs, params, data, content_type, status,
                                                          field):
    data = wavs[0].read_bytes() if data is None else data
    reply = client_more.post("/transcribe", params=params, content=data, headers={"Content-Type": content_type})
    assert reply.status_code == status, reply.text
    assert reply.json()["field"] == field and field in reply.json()["error"]
