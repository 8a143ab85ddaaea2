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
