"""The HTTP API of `recurrent serve`: FastAPI, one endpoint per task, OpenAPI docs at /docs, a playground at /.

    app = create_app(load_models(["runs/shakespeare", "runs/sent"]), Limits(max_tokens=500))
    uvicorn.run(app, host="127.0.0.1", port=8000)

    POST /generate   language models: a continuation, as JSON or (stream: true) as server-sent events
    POST /predict    classifiers (a label and its probabilities), tree classifiers, taggers (a tag per token)
    POST /translate  encoder-decoders: the translation, its subwords and the attention weights; beam size per request
    POST /forecast   forecasters: quantiles of the next `horizon` steps of series sent inline as JSON
    POST /transcribe speech recognisers: the text of an audio file sent as the raw body (Content-Type: audio/wav),
                     options as query parameters: /transcribe?beam=8&stream=true
    GET  /models     the models served: name, task, endpoint and what a request needs (labels, layer sizes)
    GET  /health     liveness, and each generation engine's batch
    GET  /           the playground (recurrent/serve/static/index.html)

Every error is JSON, `{"error": "temperature: Input should be greater than 0", "field": "temperature"}`: 422 for a
request that does not fit its schema or the server's limits, 404 for an unknown model, 413 for a body over
--max-body (/transcribe: the audio limit), 415 for a /transcribe body that is a form or JSON rather than the
audio file, 503 when too many generations wait, 504 past --max-seconds. The stream's events:

    event: start   data: {"model": ..., "prime": ..., "prime_activations": [...] or null}
    event: token   data: {"index": 0, "id": 17, "text": "e", "activation": 0.42}     (one per token)
    event: done    data: {"finish_reason": "length", "text": "..."}
"""
from __future__ import annotations

import asyncio
import io
import json
import time
from importlib import resources
from typing import Annotated

import torch
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from recurrent.cli.generate import _encode_prime, _text_of
from recurrent.errors import UserError
from recurrent.sampling import Sampler
from recurrent.serve.engine import Job
from recurrent.serve.models import ENDPOINTS, Served
from recurrent.serve.schemas import (
    ErrorResponse,
    ForecastRequest,
    ForecastResponse,
    GenerateRequest,
    GenerateResponse,
    Limits,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    SeriesForecast,
    TranscribeParams,
    TranscribeResponse,
    TranslateRequest,
    TranslateResponse,
)

ERRORS = {code: {"model": ErrorResponse} for code in (404, 413, 415, 422, 503, 504)}


class FieldError(Exception):
    """A request the schema admits but the server cannot serve: the status, the field at fault, and why."""

    def __init__(self, field: str | None, message: str, status: int = 422):
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


def error(status: int, field: str | None, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def create_app(served: dict[str, Served], limits: Limits | None = None, cors: list[str] | None = None) -> FastAPI:
    limits = limits or Limits()
    app = FastAPI(title="recurrent serve", description="Recurrent models over HTTP: generate, predict, translate, "
                  "forecast, transcribe.")
    if cors:  # none unless asked: a page from another origin cannot call this server
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=cors, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type"])
    app.add_middleware(BodyLimit, max_body=limits.max_body, per_path={"/transcribe": limits.max_audio})
    _handlers(app)

    def pick(name: str | None, endpoint: str) -> Served:
        """The model a request names, which must be one this endpoint serves; none named: the first such."""
        if name is None:
            for s in served.values():
                if s.endpoint == endpoint:
                    return s
            raise FieldError("model", f"no model served here takes {endpoint}", 404)
        if name not in served:
            raise FieldError("model", f"unknown model {name!r}: this server has {sorted(served)}", 404)
        s = served[name]
        if s.endpoint != endpoint:
            raise FieldError("model", f"{name!r} is a {s.task!r} model: use {s.endpoint}, not {endpoint}")
        return s

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def playground() -> HTMLResponse:
        return HTMLResponse(resources.files("recurrent.serve").joinpath("static/index.html").read_text("utf-8"))

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "generation": {s.name: s.engine.stats() for s in served.values() if s.engine}}

    @app.get("/models", response_model=list[ModelInfo])
    def models() -> list[ModelInfo]:
        return [ModelInfo(name=s.name, task=s.task, endpoint=s.endpoint, run=s.run, details=s.details())
                for s in served.values()]

    @app.post("/generate", response_model=GenerateResponse, responses=ERRORS)
    async def generate(body: GenerateRequest):
        """Sample `length` tokens after `prime`. With `stream: true` the reply is text/event-stream: `start`, one
        `token` event per token as it is sampled, then `done`. Concurrent requests are batched token by token."""
        s = pick(body.model, "/generate")
        if s.engine.stats()["waiting"] >= limits.max_waiting:
            raise FieldError(None, f"{limits.max_waiting} generations are waiting already: try again later", 503)
        run = Generation(s, body, limits)
        s.engine.submit(run.job)
        if body.stream:
            return StreamingResponse(run.events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await run.collect()

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS)
    async def predict(body: PredictRequest):
        """A classifier's label with the probabilities of every label, or a tagger's tag per token."""
        s = pick(body.model, "/predict")
        if len(body.text) > limits.max_text:
            raise FieldError("text", f"text holds {len(body.text)} characters, over the limit {limits.max_text}")
        if not body.text.split():
            raise FieldError("text", "text is empty: give a sentence (tokens separated by spaces)")
        work = _classify if s.task == "classify" else _tag
        return await _timed(limits, lambda: work(s, body.text))

    @app.post("/translate", response_model=TranslateResponse, responses=ERRORS)
    async def translate(body: TranslateRequest):
        """One sentence's translation (greedy, or beam search with `beam` beams) with its attention weights."""
        s = pick(body.model, "/translate")
        if body.beam > limits.max_beam:
            raise FieldError("beam", f"beam must be at most {limits.max_beam}, got {body.beam}")
        if len(body.text) > limits.max_text:
            raise FieldError("text", f"text holds {len(body.text)} characters, over the limit {limits.max_text}")
        if not body.text.strip():
            raise FieldError("text", "text is empty: give a sentence to translate")
        return await _timed(limits, lambda: _translate(s, body))

    @app.post("/forecast", response_model=ForecastResponse, responses=ERRORS)
    async def forecast(body: ForecastRequest):
        """Quantiles of the next `horizon` steps (the run's) of each series, from `samples` sample paths seeded by
        `seed`: the numbers `recurrent forecast --seed` writes for the same series in the same order."""
        s = pick(body.model, "/forecast")
        if len(body.series) > limits.max_series:
            raise FieldError("series", f"{len(body.series)} series, over the limit {limits.max_series}")
        if len(body.quantiles) > limits.max_quantiles:
            raise FieldError("quantiles", f"{len(body.quantiles)} levels, over the limit {limits.max_quantiles}")
        if body.samples > limits.max_samples:
            raise FieldError("samples", f"samples must be at most {limits.max_samples}, got {body.samples}")
        series = _series(s, body, limits)
        return await _timed(limits, lambda: _forecast(s, body, series))

    @app.post("/transcribe", response_model=TranscribeResponse, responses=ERRORS, openapi_extra={"requestBody": {
        "required": True, "description": "the audio file itself (WAV, FLAC, ...: what soundfile reads)",
        "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}}})
    async def transcribe(request: Request, params: Annotated[TranscribeParams, Query()]):
        """The text of one audio file, sent as the body (`curl --data-binary @a.wav -H 'Content-Type: audio/wav'`),
        resampled and downmixed as `recurrent transcribe` does; options in the query: ?beam=8&stream=true."""
        s = pick(params.model, "/transcribe")
        if params.beam > limits.max_beam:
            raise FieldError("beam", f"beam must be at most {limits.max_beam}, got {params.beam}")
        details = s.details()
        if params.stream and not details["stream"]:
            why = "bidirectional" if details["bidirectional"] else "trained with --normalize utterance"
            raise FieldError("stream", f"{s.name!r} is {why}: streaming needs a unidirectional run trained with "
                             "--normalize running or global")
        data = await request.body()
        seconds = _audio_seconds(data, request.headers.get("content-type", ""), limits)
        return await _timed(limits, lambda: _transcribe(s, data, params, seconds))

    return app


# --- generation ---------------------------------------------------------------------------------------------


class Generation:
    """One /generate request: its checked Job for the engine, and the events the engine sends back, read on the
    event loop (the engine thread hands them over with call_soon_threadsafe)."""

    def __init__(self, s: Served, body: GenerateRequest, limits: Limits):
        self.name, self.body, self.vocab = s.name, body, s.model.vocab
        model, meta = s.model.model, s.meta
        if body.length > limits.max_tokens:
            raise FieldError("length", f"length must be at most {limits.max_tokens}, got {body.length}")
        ids = _prime_ids(self.vocab, body.prime)
        if len(ids) > limits.max_prime:
            raise FieldError("prime", f"the prime holds {len(ids)} tokens, over the limit {limits.max_prime}")
        sentences = meta.get("sentences") is not None  # a sentence run: starts after, and stops at, "\n"
        sep = int(self.vocab.encode("\n")[0])
        if sentences and ids[0] != sep:
            ids = torch.cat([torch.tensor([sep]), ids])
        unit = None
        if body.unit is not None:
            L = len(model.layers)
            if not -L <= body.layer < L:
                raise FieldError("layer", f"layer must be in {-L}..{L - 1} for this {L}-layer model, got {body.layer}")
            H = model.layers[body.layer].hidden_size
            if body.unit >= H:
                raise FieldError("unit", f"unit must be in 0..{H - 1} (layer {body.layer % L} has {H}), got {body.unit}")
            unit = (body.layer % L, body.unit)
        sampler = Sampler(body.temperature, body.top_k, body.top_p, body.greedy,
                          torch.Generator().manual_seed(body.seed))  # the CPU noise `recurrent generate` draws
        self.loop, self.queue = asyncio.get_running_loop(), asyncio.Queue()
        self.job = Job(ids, body.length, sampler, self._emit, _condition(model, meta, body.condition), unit,
                       sep if sentences else None, time.monotonic() + limits.max_seconds,
                       inbox=(self.loop, self.queue))
        # a word after a prime that does not end in a space needs one before it, as `recurrent generate` prints
        self.space = self.vocab.level == "word" and not body.prime[-1].isspace()
        self.prime_activations = None
        self.text: list[str] = []

    def _emit(self, kind: str, payload) -> None:  # on the engine thread
        self.loop.call_soon_threadsafe(self.queue.put_nowait, [(kind, payload)])

    def _token(self, index: int, payload) -> dict:
        """A Token (schemas.py) as the dict it is sent as: built per token, so not validated again."""
        token, activation = payload
        text, self.space = _text_of(self.vocab, token, self.space)
        self.text.append(text)
        return {"index": index, "id": token, "text": text, "activation": activation}

    async def _next(self) -> list[tuple[str, object]]:
        """The events that have arrived: at least one (waiting for it), and all that queued up behind it. The queue
        holds lists of events (a Relay hands over each job's events of several steps as one item)."""
        events = list(await self.queue.get())
        while not self.queue.empty():
            events += self.queue.get_nowait()
        return events

    async def collect(self) -> JSONResponse:
        """The whole reply, a GenerateResponse; its tokens are built as dicts and sent as they are, since a reply
        of thousands of tokens validated again would cost more than generating them."""
        tokens, reason = [], None
        try:
            while reason is None:
                for kind, payload in await self._next():
                    if kind == "prime":
                        self.prime_activations = payload
                    elif kind == "token":
                        tokens.append(self._token(len(tokens), payload))
                    elif kind == "error":
                        raise FieldError(None, f"generation failed: {payload}", 500)
                    else:
                        reason = payload
        finally:
            self.job.cancelled = True  # a client that went away stops its generation (no-op once done)
        return JSONResponse({"model": self.name, "prime": self.body.prime, "text": "".join(self.text),
                             "tokens": tokens, "prime_activations": self.prime_activations,
                             "finish_reason": reason})

    async def events(self):
        """The server-sent events: start (with the prime's activations when a unit was asked for), token..., done.
        Tokens that queued up while the client was slow go out in one write."""
        n = 0
        try:
            arrived = []
            if self.body.unit is not None:  # the engine's first event for a unit: the prime's activations
                arrived = await self._next()
                self.prime_activations = arrived.pop(0)[1]
            yield _sse("start", {"model": self.name, "prime": self.body.prime,
                                 "prime_activations": self.prime_activations})
            while True:
                chunk, done = [], False
                for kind, payload in arrived or await self._next():
                    if kind == "token":
                        chunk.append(_sse("token", self._token(n, payload)))
                        n += 1
                    elif kind == "error":
                        chunk.append(_sse("error", {"error": f"generation failed: {payload}", "field": None}))
                        done = True
                    elif kind == "done":
                        chunk.append(_sse("done", {"finish_reason": payload, "text": "".join(self.text)}))
                        done = True
                yield "".join(chunk)
                arrived = []
                if done:
                    return
        finally:
            self.job.cancelled = True


class Relay:
    """An engine's `deliver` hook (called on its thread once per step): hands the events over to the event loops,
    one wake-up per loop, at most every `interval` seconds, or at once when a request is done. A wake-up per token
    costs a thread switch, which on a busy machine costs more than a step; 20 ms is too short to see in a stream."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.pending, self.last = interval, [], 0.0

    def __call__(self, events: list[tuple[Job, str, object]]) -> None:
        self.pending += events
        now = time.monotonic()
        if now - self.last < self.interval and not any(kind == "done" for _, kind, _ in events):
            return
        each: dict[int, tuple[Job, list]] = {}  # each job's events, in order: one queue item per job
        for job, kind, payload in self.pending:
            each.setdefault(id(job), (job, []))[1].append((kind, payload))
        loops: dict = {}
        for job, job_events in each.values():
            loop, queue = job.inbox  # its Generation's
            loops.setdefault(loop, []).append((queue, job_events))
        for loop, puts in loops.items():
            loop.call_soon_threadsafe(_put_all, puts)
        self.pending, self.last = [], now


def _put_all(puts: list) -> None:
    for queue, events in puts:
        queue.put_nowait(events)


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _prime_ids(vocab, prime: str) -> torch.Tensor:
    """The prime's ids (P,). A character the model never saw is a 422 naming them (a char model would read it as
    <unk>, which it rarely saw either); unseen words read as <unk>, as in `recurrent generate`."""
    unseen = vocab.unseen(prime)
    if vocab.level == "char" and unseen.counts:
        raise FieldError("prime", f"the prime holds {unseen.summary()} that this model never saw in training")
    try:
        return _encode_prime(vocab, prime)  # (word level: no <eos> after an unfinished last line)
    except UserError as e:
        raise FieldError("prime", str(e)) from None


def _condition(model, meta: dict, condition) -> torch.Tensor | None:
    """A conditioned model's label id () or features (F,), from the request's `condition`; None for a model
    without one."""
    if not model.conditioned:
        if condition is not None:
            raise FieldError("condition", "this model was trained without a condition: give none")
        return None
    labels = meta.get("labels")
    if labels:
        if not isinstance(condition, str) or condition not in labels:
            raise FieldError("condition", f"condition must be one of the labels {labels}, got {condition!r}")
        return torch.tensor(labels.index(condition))
    width = model.config.condition_size
    if not isinstance(condition, list) or len(condition) != width:
        raise FieldError("condition", f"condition must be a list of {width} numbers for this model")
    vector = torch.tensor(condition, dtype=torch.float32)
    if not torch.isfinite(vector).all():
        raise FieldError("condition", "condition must hold finite numbers")
    return vector


# --- predict and translate ----------------------------------------------------------------------------------


async def _timed(limits: Limits, work):
    """work() on a worker thread, on one intra-op thread (no OpenMP pool beside the generation engines': see
    recurrent/serve/engine.py), within --max-seconds (a 504 past them)."""
    def alone():
        torch.set_num_threads(1)
        return work()

    try:
        return await asyncio.wait_for(run_in_threadpool(alone), limits.max_seconds)
    except TimeoutError:
        raise FieldError(None, f"the request took over {limits.max_seconds:g} s", 504) from None


def _classify(s: Served, text: str) -> PredictResponse:
    classifier = s.model
    if classifier.reads_trees:
        from recurrent.data.labelled import parse_tree
        try:
            x = parse_tree(text, "text")
        except UserError as e:
            raise FieldError("text", f"{e} (this classifier reads one PTB-bracketed tree, such as "
                             "(3 (2 a) (3 film)))") from None
        tokens = x.leaves()
    else:
        x = tokens = text.split()
    with s.lock, torch.inference_mode():
        logits = classifier.model(**classifier.batch([classifier.encode_input(x)])).logits  # (1, C)
    p = logits.float().softmax(-1)[0].tolist()
    return PredictResponse(model=s.name, task="classify", tokens=tokens, label=classifier.labels[max(
        range(len(p)), key=p.__getitem__)], probabilities=dict(zip(classifier.labels, p)))


def _tag(s: Served, text: str) -> PredictResponse:
    tokens = text.split()
    with s.lock:
        tags = s.model.predict([tokens])[0]
    return PredictResponse(model=s.name, task="tag", tokens=tokens, tags=tags)


def _translate(s: Served, body: TranslateRequest) -> TranslateResponse:
    translator = s.model
    with s.lock:
        out = translator.translate([body.text], beam_size=body.beam, alpha=body.alpha)[0]
    h = out.hypothesis
    return TranslateResponse(model=s.name, translation=out.text, source_tokens=out.src_tokens,
                             target_tokens=translator.target_tokens(h.tokens),
                             attention=None if h.attention is None else h.attention.float().tolist(), score=h.score)


# --- forecast and transcribe -------------------------------------------------------------------------------


def _series(s: Served, body: ForecastRequest, limits: Limits) -> list:
    """The request's series as recurrent.forecast.data.Series, each checked against the run: ids, steps,
    timestamps; a FieldError naming the series' field for the first problem."""
    from recurrent.inference.forecast import series_from_lists

    forecaster, out, seen = s.model, [], {}
    known = set(forecaster.meta["ids"]) if forecaster.meta["model"]["embedding_size"] else None
    for i, x in enumerate(body.series):
        field = f"series.{i}"
        if x.id in seen:
            raise FieldError(f"{field}.id", f"id {x.id!r} repeats that of series {seen[x.id]}")
        seen[x.id] = i
        if known is not None and x.id not in known:
            raise FieldError(f"{field}.id", f"{x.id!r} is not a series {s.name!r} was trained on: it embeds each "
                             "training series' id, so it forecasts only those (GET /models lists them)")
        if len(x.values) > limits.max_values:
            raise FieldError(f"{field}.values", f"{len(x.values)} values, over the limit {limits.max_values}")
        if all(v is None for v in x.values):
            raise FieldError(f"{field}.values", "every value is missing: nothing to forecast from")
        try:
            series = series_from_lists(x.id, x.values, x.timestamps, where=field)
        except UserError as e:
            raise FieldError(f"{field}.timestamps", str(e).removeprefix(f"{field}: ")) from None
        try:
            forecaster.check_step(series.step, x.timestamps is not None, f"series {x.id!r}")
        except UserError as e:
            raise FieldError(f"{field}.timestamps", str(e)) from None
        if x.timestamps is not None and len(x.timestamps) < 2:
            raise FieldError(f"{field}.timestamps", "one timestamp gives no step to continue: give at least two "
                             "values")
        out.append(series)
    try:
        forecaster.check_features(out[0])
    except UserError:
        raise FieldError("model", f"{s.name!r} was trained with covariates, whose future values /forecast cannot "
                         "take: use `recurrent evaluate RUN --data ... --test ...`") from None
    return out


def _forecast(s: Served, body: ForecastRequest, series: list) -> ForecastResponse:
    with s.lock:
        out = s.model.forecast(series, body.quantiles, body.samples, body.seed)
    forecasts = []
    for x, times, q in zip(series, out.times, out.quantiles):  # q (H, Q)
        timed = x.timestamps is not None
        forecasts.append(SeriesForecast(
            id=x.id, timestamps=[str(t) for t in times] if timed else None, steps=None if timed else times.tolist(),
            quantiles={f"{level:g}": q[:, j].tolist() for j, level in enumerate(out.levels)}))
    return ForecastResponse(model=s.name, horizon=s.model.horizon, levels=list(out.levels), forecasts=forecasts)


def _audio_seconds(data: bytes, content_type: str, limits: Limits) -> float:
    """The duration of the audio file in a /transcribe body, read from its header; a FieldError("audio") for
    a body that is empty, not audio, or too long."""
    import soundfile as sf

    if content_type.startswith(("multipart/", "application/x-www-form-urlencoded", "application/json")):
        raise FieldError("audio", f"the body is {content_type.split(';')[0]}: send the audio file itself as the "
                         "body, with Content-Type: audio/wav (curl --data-binary @a.wav)", 415)
    if not data:
        raise FieldError("audio", "the body is empty: send an audio file (curl --data-binary @a.wav)")
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001  (soundfile raises several kinds for bytes that are not audio)
        why = getattr(e, "error_string", None) or str(e)  # libsndfile's reason, without the BytesIO's repr
        raise FieldError("audio", f"the body is not audio soundfile can read (WAV, FLAC, OGG...): {why}") from None
    if info.frames <= 0:
        raise FieldError("audio", "the audio holds no samples")
    seconds = info.frames / info.samplerate
    if seconds > limits.max_audio_seconds:
        raise FieldError("audio", f"the audio lasts {seconds:.1f} s, over the limit {limits.max_audio_seconds:g} s")
    return seconds


def _transcribe(s: Served, data: bytes, params: TranscribeParams, seconds: float) -> TranscribeResponse:
    from recurrent.speech.inference import audio_from_bytes

    rec = s.model
    try:
        audio = audio_from_bytes(data, rec.features.sample_rate)
    except UserError as e:
        raise FieldError("audio", str(e).removeprefix("audio: ")) from None
    with s.lock:
        text = rec.transcribe_audio(audio, params.beam, params.stream)
    return TranscribeResponse(model=s.name, text=text, seconds=seconds)


# --- errors and limits --------------------------------------------------------------------------------------


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(FieldError)
    async def field_error(request: Request, e: FieldError) -> JSONResponse:
        return error(e.status, e.field, f"{e.field}: {e.message}" if e.field else e.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        where = [str(part) for part in first["loc"] if part not in ("body", "query")]
        if first["type"] == "json_invalid" or not where:
            field = "body"
            message = f"body: {first['msg']} (send one JSON object, with Content-Type: application/json)"
        elif first["type"] == "extra_forbidden":
            field, message = where[0], f"{where[0]}: unknown field (see GET /docs for the fields)"
        else:
            field = ".".join(where)
            message = f"{field}: {first['msg']}, got {json.dumps(first.get('input'), default=str)[:80]}"
        return error(422, field, message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return error(e.status_code, None, str(e.detail))


class BodyLimit:
    """ASGI middleware: a 413 for a body over `max_body` bytes (`per_path[path]` for those paths), told by
    Content-Length or counted as it arrives."""

    def __init__(self, app, max_body: int, per_path: dict[str, int] | None = None):
        self.app, self.default, self.per_path = app, max_body, per_path or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        max_body = self.per_path.get(scope["path"], self.default)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body):
            return await self._refuse(max_body, scope, receive, send)
        received, over, started = 0, False, False

        async def counted():
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    over = True
                    raise _TooLarge  # (FastAPI turns an error while reading the body into its own 400)
            return message

        async def tracked(message):
            nonlocal started
            if not over:  # past the limit, the app's reply to the cut body is dropped for the 413 below
                started = started or message["type"] == "http.response.start"
                await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            pass
        if over and not started:
            await self._refuse(max_body, scope, receive, send)

    async def _refuse(self, max_body: int, scope, receive, send):
        await error(413, "body", f"body: over the limit of {max_body} bytes")(scope, receive, send)


class _TooLarge(Exception):
    pass


__all__ = ["ENDPOINTS", "FieldError", "Limits", "create_app"]
