"""The requests and responses of `recurrent serve`, as pydantic models: FastAPI validates every body against them
and writes them into the OpenAPI page at /docs.

Requests are strict (a string is not a number, a number is not a bool) and forbid unknown fields, so a typo such
as "temprature" is a 422 naming it, not a silently ignored setting. Bounds that the server sets (`Limits`: the
longest prime, output and beam) are checked by the app against the request, with the same error shape.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from recurrent.serve.limits import Limits  # noqa: F401  (re-exported: the app and tests import it from here)

STRICT = ConfigDict(extra="forbid", strict=True)


class GenerateRequest(BaseModel):
    """Sample a continuation of `prime` from a language model."""

    model_config = STRICT
    model: str | None = Field(None, description="a model name from GET /models (default: the first language model)")
    prime: str = Field("\n", min_length=1, description="the text to continue")
    length: int = Field(200, ge=0, description="tokens to generate (at most the server's --max-tokens)")
    temperature: float = Field(1.0, gt=0, allow_inf_nan=False, description="> 0; below 1 is more conservative")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens (0: all)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: the smallest set with this mass")
    greedy: bool = Field(False, description="always take the most likely token (temperature, top_k, top_p unused)")
    seed: int = Field(1, ge=0, lt=2**63, description="the sampling noise's seed: the same seed, the same text "
                      "(alone or batched with other requests)")
    stream: bool = Field(False, description="true: server-sent events, one `token` event per token, then `done`")
    unit: int | None = Field(None, ge=0, description="a hidden unit: each token carries its activation h_t[unit]")
    layer: int = Field(-1, description="the unit's layer (0 the first, -1 the last)")
    condition: str | list[float] | None = Field(None, description="a conditioned run's label or feature vector")


class Token(BaseModel):
    """One generated token, as a stream event and in a non-streamed reply."""

    index: int  # 0 for the first generated token
    id: int
    text: str  # as `recurrent generate` prints it (a word after a space, <eos> as a newline)
    activation: float | None = None  # h_t[unit] after reading this token, when the request named a unit


class GenerateResponse(BaseModel):
    model: str
    prime: str
    text: str  # the continuation, prime excluded
    tokens: list[Token]
    prime_activations: list[float] | None = None  # h_t[unit] after each prime token (char level: each character)
    finish_reason: Literal["length", "end", "timeout", "cancelled"]  # end: a sentence run wrote its sentence


class PredictRequest(BaseModel):
    """Label (classifier), tag (tagger) or compose (tree classifier: a PTB-bracketed tree) one sentence."""

    model_config = STRICT
    model: str | None = Field(None, description="a model name from GET /models (default: the first classifier "
                              "or tagger)")
    text: str = Field(..., description="tokens separated by spaces; for a tree model, one bracketed tree")


class PredictResponse(BaseModel):
    model: str
    task: Literal["classify", "tag"]
    tokens: list[str]
    label: str | None = None  # classify
    probabilities: dict[str, float] | None = None  # classify: softmax over the labels
    tags: list[str] | None = None  # tag: one per token


class TranslateRequest(BaseModel):
    model_config = STRICT
    model: str | None = Field(None, description="a model name from GET /models (default: the first translator)")
    text: str = Field(..., description="one source sentence")
    beam: int = Field(1, ge=1, description="beam size (1: greedy search; at most the server's --max-beam)")
    alpha: float = Field(1.0, ge=0, allow_inf_nan=False, description="length normalisation: score / length^alpha")


class TranslateResponse(BaseModel):
    model: str
    translation: str
    source_tokens: list[str]  # as the model read them (subwords)
    target_tokens: list[str]  # the output's subwords, </s> excluded
    attention: list[list[float]] | None  # (target tokens + 1, source tokens): each output step's weights
    score: float  # log p / length^alpha


def _float32(x: float) -> float:
    if abs(x) > 3.4028234e38:
        raise ValueError("Value is not finite in float32")
    return x


Value = Annotated[float, Field(allow_inf_nan=False), AfterValidator(_float32)]


class SeriesIn(BaseModel):
    """One series, oldest value first."""

    model_config = STRICT
    id: str = Field(..., min_length=1, max_length=200, description="its name (an id-embedding model knows only "
                    "its training ids: GET /models lists them)")
    values: list[Value | None] = Field(..., min_length=1, description="the observations; null for a missing one")
    timestamps: list[str] | None = Field(None, description="ISO 8601, one per value, evenly spaced (needed, and "
                                         "only allowed, when the run was trained on data with timestamps)")


class ForecastRequest(BaseModel):
    """Forecast the next `horizon` steps (the run's) of each series, as quantiles of sampled paths."""

    model_config = STRICT
    model: str | None = Field(None, description="a model name from GET /models (default: the first forecaster)")
    series: list[SeriesIn] = Field(..., min_length=1, description="the series (at most the server's --max-series)")
    quantiles: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        [0.1, 0.5, 0.9], min_length=1, description="levels in (0, 1); the median is always added")
    samples: int = Field(200, ge=1, description="sample paths per series (at most the server's limit)")
    seed: int = Field(0, ge=0, lt=2**63, description="seeds the sample paths: the same request, the same numbers, "
                      "as `recurrent forecast --seed`")


class SeriesForecast(BaseModel):
    id: str
    timestamps: list[str] | None  # the horizon's timestamps, continuing the series' (when it had them)
    steps: list[int] | None  # without timestamps: the step indices len(values), len(values) + 1, ...
    quantiles: dict[str, list[float]]  # level ("0.1", as %g) -> (H,) values in data units


class ForecastResponse(BaseModel):
    model: str
    horizon: int
    levels: list[float]  # increasing, 0.5 among them
    forecasts: list[SeriesForecast]  # in the request's order


class TranscribeParams(BaseModel):
    """/transcribe's query parameters (the body is the audio file itself)."""

    model_config = ConfigDict(extra="forbid")  # not strict: query parameters arrive as text
    model: str | None = Field(None, description="a model name from GET /models (default: the first recogniser)")
    beam: int = Field(1, ge=1, description="beam size (1: greedy; at most the server's --max-beam)")
    stream: bool = Field(False, description="feed the audio 200 ms at a time, carrying the state (a "
                         "unidirectional run trained with --normalize running or global): the text of the whole pass")


class TranscribeResponse(BaseModel):
    model: str
    text: str
    seconds: float  # the audio's duration


class ModelInfo(BaseModel):
    name: str
    task: str
    endpoint: str
    run: str  # the folder's name (never its path: no reply names a file on the server's disk)
    details: dict


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx reply: `field` names the request field at fault ("body" for the body as a whole)."""

    error: str
    field: str | None = None
