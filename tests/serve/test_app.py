"""`recurrent serve` on tiny trained runs of every task: each endpoint against the inference code it wraps
(`LanguageModel.generate` with the same seed, Classifier/Tagger/Translator, the diagnostics' activations), the
stream arriving token by token over real HTTP, batched generations equal to the same requests alone, and a 4xx
JSON error naming the field for each kind of bad request."""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
import torch

from recurrent.cli.main import main
from recurrent.diagnostics.activations import hidden_activations
from recurrent.serve.schemas import GenerateResponse


def events(lines) -> list[tuple[str, dict, float]]:
    """(event, data, arrival time) of each server-sent event read from an iterator of lines."""
    out, event = [], None
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((event, json.loads(line[6:]), time.perf_counter()))
    return out


def test_models_and_health_list_every_run(client):
    models = {m["name"]: m for m in client.get("/models").json()}
    assert {n: (m["task"], m["endpoint"]) for n, m in models.items()} == {
        "chars": ("lm", "/generate"), "sent": ("classify", "/predict"), "trees": ("classify", "/predict"),
        "ner": ("tag", "/predict"), "reverse": ("translate", "/translate")}
    assert models["chars"]["details"]["layers"] == [16, 16] and models["trees"]["details"]["trees"]
    assert all("/" not in m["run"] for m in models.values())  # no reply names a path on the server
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["generation"]["chars"]["max_batch"] == 64
    assert "/generate" in client.get("/openapi.json").json()["paths"] and client.get("/docs").status_code == 200


@pytest.mark.parametrize("settings", [{"temperature": 0.7, "seed": 3}, {"top_k": 5, "top_p": 0.9, "seed": 11},
                                      {"greedy": True}])
def test_generate_is_recurrent_generate_with_the_same_seed(client, served, settings):
    lm = served["chars"].model
    reply = client.post("/generate", json={"prime": "the ", "length": 40, **settings})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert GenerateResponse.model_validate(body).tokens[0].index == 0  # the reply is the documented schema
    seed = settings.get("seed", 1)
    args = {k: v for k, v in settings.items() if k != "seed"}
    expected = list(lm.model.generate(lm.vocab.encode("the "), 40, generator=torch.Generator().manual_seed(seed),
                                      **args))
    assert [t["id"] for t in body["tokens"]] == expected and body["finish_reason"] == "length"
    shown = ["\ufffd" if i == lm.vocab.unk_index else lm.vocab.itos[i] for i in expected]  # as generate prints
    assert body["text"] == "".join(shown) == "".join(t["text"] for t in body["tokens"])


def test_activations_are_the_diagnostics_hidden_units(client, served):
    lm = served["chars"].model
    body = client.post("/generate", json={"prime": "ROMEO: ", "length": 30, "unit": 5, "layer": 0, "seed": 2}).json()
    assert GenerateResponse.model_validate(body).tokens[-1].activation == body["tokens"][-1]["activation"]
    ids = torch.tensor(lm.vocab.encode("ROMEO: ").tolist() + [t["id"] for t in body["tokens"]])
    reference = hidden_activations(lm.model, ids, layer=0)[:, 5]  # the layer run over the whole text at once
    got = torch.tensor(body["prime_activations"] + [t["activation"] for t in body["tokens"]])
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-4)


def test_stream_arrives_token_by_token(http):
    with http.stream("POST", "/generate", json={"prime": "the", "length": 2000, "stream": True, "seed": 4, "unit": 2}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        got = events(r.iter_lines())
    kinds = [e for e, _, _ in got]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("token") == 2000
    tokens = [d for e, d, _ in got if e == "token"]
    assert [t["index"] for t in tokens] == list(range(2000)) and len(got[0][1]["prime_activations"]) == 3
    assert got[-1][1]["text"] == "".join(t["text"] for t in tokens)
    started = got[0][2]  # the start event: after the prime was read (a first request's one-off costs come before)
    first, last = got[1][2] - started, got[-1][2] - started
    assert first < last / 3, (first, last)  # the first token came long before the last: streamed, not buffered


def test_a_client_that_leaves_stops_its_generation(http):
    with http.stream("POST", "/generate", json={"prime": "the", "length": 3000, "stream": True}) as r:
        next(line for line in r.iter_lines() if line.startswith("event: token"))
    deadline = time.monotonic() + 10
    while http.get("/health").json()["generation"]["chars"]["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http.get("/health").json()["generation"]["chars"]["running"] == 0


def test_batched_requests_give_the_tokens_of_each_alone(live):
    requests = [{"prime": p, "length": 300, "seed": s, "temperature": t, "top_k": k, "top_p": q, "unit": 3}
                for p, s, t, k, q in [("the", 1, 1.0, 0, 1.0), ("ROMEO", 2, 0.5, 0, 1.0), ("a", 3, 1.3, 4, 1.0),
                                      ("cat ", 4, 1.0, 0, 0.8), ("mat.\n", 5, 0.9, 10, 0.95), ("the", 6, 2.0, 0, 1.0),
                                      ("sat", 7, 1.0, 2, 0.5), ("on", 1, 1.0, 0, 1.0)]]

    def ask(body):
        with httpx.Client(base_url=live.url, timeout=60) as c:
            return c.post("/generate", json=body).json()

    alone = [ask(body) for body in requests]
    together: list = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def worker(i):
        barrier.wait()
        together[i] = ask(requests[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together):
        assert [t["id"] for t in a["tokens"]] == [t["id"] for t in b["tokens"]]
        torch.testing.assert_close([t["activation"] for t in a["tokens"]], [t["activation"] for t in b["tokens"]])
    with httpx.Client(base_url=live.url) as c:
        assert c.get("/health").json()["generation"]["chars"]["peak_batch"] > 1  # they did run as one batch


def test_predict_classifier_tagger_and_tree(client, served):
    reply = client.post("/predict", json={"text": "a good film"}).json()  # default: the first classifier
    classifier = served["sent"].model
    assert reply["model"] == "sent" and reply["label"] == classifier.predict([["a", "good", "film"]])[0]
    assert abs(sum(reply["probabilities"].values()) - 1) < 1e-5 and set(reply["probabilities"]) == {"pos", "neg"}
    tree = client.post("/predict", json={"model": "trees", "text": "(3 (2 a) (4 good))"}).json()
    from recurrent.data.labelled import parse_tree
    assert tree["tokens"] == ["a", "good"]
    assert tree["label"] == served["trees"].model.predict([parse_tree("(3 (2 a) (4 good))")])[0]
    tags = client.post("/predict", json={"model": "ner", "text": "Anna lives in Paris"}).json()
    assert tags["tags"] == served["ner"].model.predict([["Anna", "lives", "in", "Paris"]])[0]
    assert tags["task"] == "tag" and tags["tokens"] == ["Anna", "lives", "in", "Paris"]


@pytest.mark.parametrize("beam", [1, 3])
def test_translate_with_attention(client, served, beam):
    reply = client.post("/translate", json={"text": "a b c d", "beam": beam}).json()
    expected = served["reverse"].model.translate(["a b c d"], beam_size=beam)[0]
    assert reply["translation"] == expected.text and reply["source_tokens"] == expected.src_tokens
    attention = torch.tensor(reply["attention"])  # (target + 1, source): each row a distribution
    assert attention.shape == (len(reply["target_tokens"]) + 1, len(reply["source_tokens"]))
    torch.testing.assert_close(attention.sum(1), torch.ones(len(attention)))


BAD = [  # (endpoint, body, status, field): each kind of bad request
    ("/generate", {"temperature": "hot"}, 422, "temperature"),  # wrong type
    ("/generate", {"seed": "1"}, 422, "seed"),  # a string is not a number
    ("/generate", {"greedy": "yes"}, 422, "greedy"),
    ("/generate", {"length": -1}, 422, "length"),  # negative length
    ("/generate", {"length": 3001}, 422, "length"),  # over --max-tokens
    ("/generate", {"temperature": 0}, 422, "temperature"),
    ("/generate", {"temperature": -0.5}, 422, "temperature"),
    ("/generate", {"top_p": 1.5}, 422, "top_p"),
    ("/generate", {"top_k": -2}, 422, "top_k"),
    ("/generate", {"prime": "the Ω"}, 422, "prime"),  # a character the model never saw
    ("/generate", {"prime": ""}, 422, "prime"),
    ("/generate", {"prime": "the " * 200}, 422, "prime"),  # over --max-prime
    ("/generate", {"temprature": 0.5}, 422, "temprature"),  # unknown field
    ("/generate", {"model": "nope"}, 404, "model"),  # unknown model
    ("/generate", {"model": "sent"}, 422, "model"),  # wrong endpoint for the model's task
    ("/generate", {"unit": 16}, 422, "unit"),
    ("/generate", {"unit": 1, "layer": 2}, 422, "layer"),
    ("/generate", {"condition": "pos"}, 422, "condition"),  # an unconditioned model
    ("/generate", [1, 2], 422, "body"),  # not an object
    ("/predict", {}, 422, "text"),  # a missing field
    ("/predict", {"text": "   "}, 422, "text"),  # empty text to classify
    ("/predict", {"text": "x" * 201}, 422, "text"),  # over --max-text
    ("/predict", {"model": "trees", "text": "a good film"}, 422, "text"),  # not a tree
    ("/predict", {"model": "chars", "text": "hi"}, 422, "model"),
    ("/translate", {"text": "a b", "beam": 0}, 422, "beam"),
    ("/translate", {"text": "a b", "beam": 5}, 422, "beam"),  # over --max-beam
    ("/translate", {"text": ""}, 422, "text"),
    ("/translate", {"text": "a", "alpha": -1}, 422, "alpha"),
]


@pytest.mark.parametrize("path, body, status, field", BAD)
def test_bad_request_is_a_4xx_naming_the_field(client, path, body, status, field):
    reply = client.post(path, json=body)
    assert reply.status_code == status, reply.text
    assert reply.json()["field"] == field and field in reply.json()["error"]


@pytest.mark.parametrize("content, headers", [(b"not json", {"Content-Type": "application/json"}),
                                              (b'{"prime": "the"', {"Content-Type": "application/json"}),
                                              (b"", {"Content-Type": "application/json"})])
def test_a_body_that_is_not_json(client, content, headers):
    reply = client.post("/generate", content=content, headers=headers)
    assert reply.status_code == 422 and reply.json()["field"] == "body"


def test_an_oversized_body_is_413_declared_or_streamed(client, live):
    big = json.dumps({"prime": "a" * 5000}).encode()
    reply = client.post("/generate", content=big, headers={"Content-Type": "application/json"})
    assert reply.status_code == 413 and reply.json()["field"] == "body"

    def chunks():  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    with httpx.Client(base_url=live.url) as c:
        reply = c.post("/generate", content=chunks(), headers={"Content-Type": "application/json"})
    assert reply.status_code == 413 and reply.json()["field"] == "body"


def test_unknown_route_and_method_are_json(client):
    assert client.get("/nope").status_code == 404 and client.get("/nope").json()["field"] is None
    assert client.get("/generate").status_code == 405


def test_cors_only_when_asked(served, limits):
    from fastapi.testclient import TestClient

    from recurrent.serve.app import create_app

    origin = {"Origin": "http://example.test"}
    plain = TestClient(create_app(served, limits)).get("/models", headers=origin)
    assert "access-control-allow-origin" not in plain.headers
    allowed = TestClient(create_app(served, limits, ["http://example.test"])).get("/models", headers=origin)
    assert allowed.headers["access-control-allow-origin"] == "http://example.test"


def test_playground_is_one_self_contained_page(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/generate" in page.text and "src=\"http" not in page.text and "href=\"http" not in page.text


def test_cli_warns_off_loopback_and_refuses_bad_runs(runs, tmp_path, monkeypatch, capsys):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    assert main(["serve", str(runs["chars"]), "--port", "0"]) == 0
    assert calls[-1]["host"] == "127.0.0.1" and "warning" not in capsys.readouterr().err
    with pytest.warns(UserWarning, match="anyone who can reach"):
        assert main(["serve", str(runs["chars"]), "--host", "0.0.0.0"]) == 0
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", str(runs["chars"]), "--max-batch", "0"]) == 2
