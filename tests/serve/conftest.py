"""Tiny trained runs of every task `recurrent serve` serves, trained once per session with the real trainers, and
the server over them: the FastAPI TestClient, and uvicorn on a free loopback port for real HTTP."""
from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from recurrent.models.classifier import ClassifierConfig
from recurrent.models.lm import LMConfig
from recurrent.models.seq2seq import Seq2SeqConfig
from recurrent.models.tagger import TaggerConfig
from recurrent.train.classify import TrainClassifyConfig, train_classify
from recurrent.train.lm import TrainLMConfig, train_lm
from recurrent.train.loop import flat_replace
from recurrent.train.tag import TrainTagConfig, train_tag
from recurrent.train.translate import TrainTranslateConfig, train_translate

TEXT = "the cat sat on the mat.\nROMEO: a rose by any other name\n" * 30
TSV = "pos\ta good film\nneg\ta bad film\npos\tgreat fun\nneg\tdull plot\n" * 4
CONLL = "Peter X X B-PER\nlives X X O\n\nParis X X B-LOC\nis X X O\n\nAnna X X B-PER\nsmiled X X O\n"
TREES = "(3 (2 a) (4 good))\n(0 (1 bad) (2 film))\n(4 (2 (2 a) (2 film)) (4 good))\n"
QUICK = {"max_steps": 3, "progress": False}


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """name -> run folder: a char LM (2 layers), a classifier, a tree classifier, a tagger, a translator."""
    root = tmp_path_factory.mktemp("serve-runs")
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    (root / "train.tsv").write_text(TSV)
    (root / "train.conll").write_text(CONLL)
    (root / "trees.txt").write_text(TREES)
    out = {}
    out["chars"] = train_lm(flat_replace(
        TrainLMConfig(data=str(root / "text.txt"), model=LMConfig(hidden_size=16, num_layers=2)),
        out=str(root / "chars"), batch_size=4, bptt=16, eval_every=3, **QUICK))
    small = ClassifierConfig(embedding_size=6, hidden_size=6)
    out["sent"] = train_classify(flat_replace(TrainClassifyConfig(model=small), train=str(root / "train.tsv"),
                                              valid=str(root / "train.tsv"), out=str(root / "sent"), batch_size=4,
                                              **QUICK))
    out["trees"] = train_classify(flat_replace(
        TrainClassifyConfig(model=small), format="sst", structure="tree", phrases=True, train=str(root / "trees.txt"),
        valid=str(root / "trees.txt"), out=str(root / "trees"), batch_size=2, **QUICK))
    out["ner"] = train_tag(flat_replace(
        TrainTagConfig(model=TaggerConfig(embedding_size=6, hidden_size=6)), train=str(root / "train.conll"),
        valid=str(root / "train.conll"), column=3, crf=True, out=str(root / "ner"), batch_size=2, **QUICK))
    out["reverse"] = train_translate(flat_replace(
        TrainTranslateConfig(model=Seq2SeqConfig(embedding_size=8, hidden_size=16)), synthetic="reverse",
        task_min_len=2, task_max_len=5, task_size=200, out=str(root / "reverse"), batch_size=16, **QUICK))
    return out


@pytest.fixture(scope="session")
def served(runs):
    from recurrent.serve.models import load_models

    models = load_models([str(runs[k]) for k in ("chars", "sent", "trees", "ner", "reverse")], max_batch=64)
    yield models
    for s in models.values():
        if s.engine is not None:
            s.engine.close()


@pytest.fixture(scope="session")
def limits():
    from recurrent.serve.schemas import Limits

    return Limits(max_body=4096, max_prime=500, max_tokens=3000, max_text=200, max_beam=4, max_seconds=20)


@pytest.fixture(scope="session")
def app(served, limits):
    from recurrent.serve.app import create_app

    return create_app(served, limits)


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn in a thread on 127.0.0.1:<free port>; `url` for httpx."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def live(app):
    with LiveServer(app) as server:
        yield server


@pytest.fixture
def http(live):
    with httpx.Client(base_url=live.url, timeout=30) as c:
        yield c


# --- forecast and speech runs, for /forecast and /transcribe ------------------------------------------------

HORIZON = 6  # every forecast run's
TINY_FORECAST = {"context_length": 12, "batch_size": 8, "epoch_windows": 16, "eval_samples": 5, "hidden_size": 8,
                 "num_layers": 1, "horizon": HORIZON, **QUICK}
SPEECH_TEXTS = ["ab", "ba", "a b", "b a"]  # each utterance's transcript; its audio is a tone per character
TONES = {"a": 440.0, "b": 880.0, " ": 0.0}


def hourly_csv(path, lengths=(60, 50, 70)):
    """Series s0, s1, ... in the long format, hourly from 2024-01-01: a daily cycle around levels 10, 11, ..."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = ["id,timestamp,value"]
    for k, n in enumerate(lengths):
        for i in range(n):
            value = 10 + k + 3 * np.sin(2 * np.pi * i / 24) + rng.normal(0, 0.5)
            rows.append(f"s{k},{np.datetime64('2024-01-01T00:00') + np.timedelta64(i, 'h')},{value:.3f}")
    path.write_text("\n".join(rows) + "\n")
    return path


def wide_csv(path, lengths=(40, 30, 50)):
    """M4's wide format (no timestamps): "V1","V2",... then one series a row, padded at the end."""
    import numpy as np

    rng = np.random.default_rng(1)
    width = max(lengths) + 1
    rows = [",".join(f'"V{i + 1}"' for i in range(width))]
    for k, n in enumerate(lengths):
        values = 20 + 5 * k + 2 * np.sin(2 * np.pi * np.arange(n) / 6) + rng.normal(0, 0.3, n)
        fields = [f'"W{k}"', *(f"{x:.3f}" for x in values)]
        rows.append(",".join(fields + [""] * (width - len(fields))))
    path.write_text("\n".join(rows) + "\n")
    return path


def tone_wav(path, text: str, rate: int = 16000, channels: int = 1, seconds_per_char: float = 0.15):
    """A WAV with one tone per character (silence for a space), and a little noise: what a tiny recogniser reads."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(len(text) + int(rate))
    t = np.arange(int(rate * seconds_per_char)) / rate
    audio = np.concatenate([0.3 * np.sin(2 * np.pi * TONES[ch] * t) for ch in text])
    audio = (audio + rng.normal(0, 0.01, len(audio))).astype(np.float32)
    sf.write(path, np.stack([audio] * channels, 1) if channels > 1 else audio, rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def forecast_runs(tmp_path_factory):
    """name -> (data file, run folder): hourly with timestamps, wide (M4) without, and one embedding the ids."""
    from recurrent.forecast.task import TrainForecastConfig, train_forecast

    root = tmp_path_factory.mktemp("serve-forecast")
    hourly, wide = hourly_csv(root / "hourly.csv"), wide_csv(root / "wide.csv")

    def train(name, data, season, lags, **changes):
        return data, train_forecast(flat_replace(TrainForecastConfig(), data=str(data), season=season, lags=lags,
                                                 out=str(root / name), **{**TINY_FORECAST, **changes}))

    return {"hourly": train("hourly", hourly, 24, "1,24"), "wide": train("wide", wide, 6, "1,6"),
            "embedded": train("embedded", hourly, 24, "1,24", embedding_size=2)}


@pytest.fixture(scope="session")
def speech_runs(tmp_path_factory):
    """name -> run folder: a bidirectional recogniser (per-utterance normalisation) and a streaming one."""
    from recurrent.models.speech import SpeechConfig
    from recurrent.tasks.speech import TrainSpeechConfig, train_speech

    root = tmp_path_factory.mktemp("serve-speech")
    (root / "wav").mkdir()
    lines = [f"wav/{i}.wav\t{text}" for i, text in enumerate(SPEECH_TEXTS)]
    for i, text in enumerate(SPEECH_TEXTS):
        tone_wav(root / "wav" / f"{i}.wav", text)
    (root / "train.tsv").write_text("\n".join(lines) + "\n")
    small = {"hidden_size": 8, "num_layers": 1, "conv_channels": 8, "conv_stride": 2, "dropout": 0.0}
    common = {"train": str(root / "train.tsv"), "valid": str(root / "train.tsv"), "batch_size": 2, "n_mels": 16,
              "freq_masks": 0, "time_masks": 0, **QUICK}
    out = {}
    out["speech"] = train_speech(flat_replace(TrainSpeechConfig(model=SpeechConfig(**small)), out=str(root / "speech"),
                                              **common))
    out["stream"] = train_speech(flat_replace(
        TrainSpeechConfig(model=SpeechConfig(**small, bidirectional=False)), normalize="global",
        out=str(root / "stream"), **common))
    return out


@pytest.fixture(scope="session")
def served_more(forecast_runs, speech_runs):
    """A server of the forecast and speech runs."""
    from recurrent.serve.models import load_models

    folders = [str(forecast_runs[k][1]) for k in ("hourly", "wide", "embedded")]
    return load_models([*folders, str(speech_runs["speech"]), str(speech_runs["stream"])])


@pytest.fixture(scope="session")
def client_more(served_more):
    from fastapi.testclient import TestClient

    from recurrent.serve.app import create_app
    from recurrent.serve.schemas import Limits

    limits = Limits(max_series=5, max_values=500, max_quantiles=6, max_samples=400, max_audio=200_000,
                    max_audio_seconds=3.0, max_beam=4, max_seconds=30)
    with TestClient(create_app(served_more, limits)) as c:
        yield c
