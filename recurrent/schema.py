"""What a checkpoint's JSON may hold, checked before anything is built from it.

A model.json comes from a file, and a model is built from its "model" section: a crafted one could ask for a
vocabulary of 2·10⁷ words or a million layers and allocate gigabytes before anything else is looked at. So every
field is checked first, with pydantic, against a schema generated from the task's model config dataclass
(recurrent/models/*.py): the known fields only, each present, of its type, within the bounds below; and each
vocabulary is a list of strings as long as the config says. A failure is one line naming the file and the field:

    runs/x/model.json: model.hidden_size must be <= 65536, got 1000000000

    check_model_meta(meta, "lm", path)            # model.json of an "lm" run
    check_last_meta(meta, path, tensors)          # last.json: what --resume restores
"""
import dataclasses
import json
import typing
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from recurrent.backends import BACKENDS
from recurrent.errors import UserError
from recurrent.models.attention import ATTENTIONS
from recurrent.models.char_encoder import CHAR_ENCODERS
from recurrent.models.classifier import POOLINGS, STRUCTURES, ClassifierConfig
from recurrent.models.forecaster import ForecasterConfig
from recurrent.models.lm import LMConfig
from recurrent.models.seq2seq import Seq2SeqConfig
from recurrent.models.speech import SpeechConfig
from recurrent.models.tagger import TaggerConfig
from recurrent.runs import read_task

# Caps far above any model recurrent trains, low enough that a crafted file cannot ask for absurd sizes.
MAX_VOCAB = 10_000_000  # words, characters, labels, tags, subwords: V <= 10⁷
MAX_WIDTH = 65_536  # hidden, embedding, condition and character sizes
MAX_LAYERS = 64  # stacked layers (encoder and decoder each)
MAX_STEPS = 1_000_000  # a forecaster's context, horizon and lags, in time steps

BOUNDS: dict[str, tuple[float, float]] = {  # every number a model config holds: (lowest, highest), inclusive
    **dict.fromkeys(["vocab_size", "src_vocab_size", "tgt_vocab_size", "num_classes", "num_tags"], (1, MAX_VOCAB)),
    **dict.fromkeys(["num_chars", "num_conditions"], (0, MAX_VOCAB)),
    "hidden_size": (1, MAX_WIDTH),
    **dict.fromkeys(["embedding_size", "condition_size", "char_embedding_size", "char_hidden_size"], (0, MAX_WIDTH)),
    **dict.fromkeys(["num_layers", "encoder_layers", "decoder_layers"], (1, MAX_LAYERS)),
    **dict.fromkeys(["dropout", "dropout_input", "dropout_hidden", "dropout_embedding", "weight_drop",
                      "zoneout"], (0.0, 1.0)),
    "init_range": (0.0, 1e3), "reset_id": (-1, MAX_VOCAB),
    "num_features": (0, MAX_WIDTH), "num_series": (1, MAX_VOCAB),  # a forecaster's
    **dict.fromkeys(["context_length", "horizon", "season"], (1, MAX_STEPS)), "window": (0, MAX_STEPS),
}
LISTS = {  # list fields (a tuple in the config, a list in JSON, so either is taken; the items stay strict)
    "lags": Annotated[list[Annotated[int, Field(strict=True, ge=1, le=MAX_STEPS)]],
                      Field(strict=False, min_length=1, max_length=1000)],
}
CHOICES: dict[str, tuple[str, ...]] = {  # string fields with a fixed set of values (cells are checked when built:
    "backend": BACKENDS, "pooling": POOLINGS, "structure": STRUCTURES,  # a program may register its own)
    "attention": ATTENTIONS, "char_encoder": CHAR_ENCODERS,
}
MODEL_CONFIGS = {"lm": LMConfig, "classify": ClassifierConfig, "tag": TaggerConfig, "translate": Seq2SeqConfig,
                 "forecast": ForecasterConfig}

STRICT = ConfigDict(strict=True, extra="forbid")  # no "3" for 3, no true for 1, no field the config lacks
OPEN = ConfigDict(strict=True, extra="allow")  # a checkpoint's top level: metrics and trainer config beside


@cache
def config_schema(cls: type) -> type[BaseModel]:
    """A pydantic model of a config dataclass: every field typed and bounded by BOUNDS or CHOICES. A field missing
    from the file takes the dataclass default, so a checkpoint saved before a field was added still loads."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: (_field_type(f.name, hints[f.name]), ... if f.default is dataclasses.MISSING else f.default)
              for f in dataclasses.fields(cls)}
    return create_model(cls.__name__, __config__=STRICT, **fields)


def _field_type(name: str, kind: type):
    if name in LISTS:
        return LISTS[name]
    if kind is bool:
        return bool
    if kind is str:
        return Literal[CHOICES[name]] if name in CHOICES else str
    lo, hi = BOUNDS[name]  # KeyError: a new numeric field needs its bounds above
    if kind is int:
        return Annotated[int, Field(ge=lo, le=hi)]
    return Annotated[float, Field(ge=lo, le=hi, allow_inf_nan=False)]


Words = Annotated[list[str], Field(max_length=MAX_VOCAB)]


class VocabSchema(BaseModel):
    model_config = STRICT
    level: Literal["char", "word"]
    itos: Words


class LMMeta(BaseModel):
    model_config = OPEN
    model: config_schema(LMConfig)
    vocab: VocabSchema
    labels: Words | None = None  # a label-conditioned run's labels
    sentences: Literal["label", "vector", "none"] | None = None  # a run trained on sentences


class _Labelled(BaseModel):  # what the classifier's and the tagger's checkpoints share
    model_config = OPEN
    words: Words
    trainer: dict[str, Any]  # the trainer config: how evaluation files are read


class ClassifierMeta(_Labelled):
    model: config_schema(ClassifierConfig)
    labels: Words


class TaggerMeta(_Labelled):
    model: config_schema(TaggerConfig)
    chars: Words
    tags: Words


class TranslatorMeta(BaseModel):
    model_config = OPEN
    model: config_schema(Seq2SeqConfig)
    src_vocab: str  # a tokenizers JSON document: its size is checked when it is parsed
    tgt_vocab: str
    max_len: Annotated[int, Field(ge=1, le=1_000_000)]
    lowercase: bool = False


class ForecasterMeta(BaseModel):  # recurrent.forecast.task.ForecastTask.meta
    model_config = OPEN
    model: config_schema(ForecasterConfig)
    horizon: Annotated[int, Field(ge=1, le=MAX_STEPS)]
    season: Annotated[int, Field(ge=1, le=MAX_STEPS)]
    context_length: Annotated[int, Field(ge=1, le=MAX_STEPS)]
    past_length: Annotated[int, Field(ge=1, le=2 * MAX_STEPS)]
    step: str | None  # the data's step ("3600 seconds", "1 months"), None without timestamps
    format: Literal["auto", "long", "wide"]
    ids: Words  # the training file's series ids, in order: the rows of the id embedding


META_SCHEMAS = {"lm": LMMeta, "classify": ClassifierMeta, "tag": TaggerMeta, "translate": TranslatorMeta,
                "forecast": ForecasterMeta}
SIZES = {  # task -> (a list in the meta, the model field its length must equal)
    "lm": [("vocab.itos", "vocab_size"), ("labels", "num_conditions")],
    "classify": [("words", "vocab_size"), ("labels", "num_classes")],
    "tag": [("words", "vocab_size"), ("chars", "num_chars"), ("tags", "num_tags")],
    "translate": [],
    "forecast": [("ids", "num_series")],
}


# --- speech (recurrent/tasks/speech.py SpeechTask.meta): its bounds, schema and sizes in one block
BOUNDS.update({"input_size": (1, 512), "conv_channels": (0, MAX_WIDTH), "conv_kernel": (1, 64), "conv_stride": (1, 16),
               "lookahead": (0, 100), "running_norm": (0, 100_000)})


class FeaturesSchema(BaseModel):  # recurrent.speech.features.FeatureConfig
    model_config = STRICT
    sample_rate: Annotated[int, Field(ge=1000, le=192000)]
    n_mels: Annotated[int, Field(ge=1, le=512)]
    win_ms: Annotated[float, Field(ge=1.0, le=1000.0)]
    hop_ms: Annotated[float, Field(ge=1.0, le=1000.0)]
    normalize: Literal["utterance", "global", "running"]


class SpeechMeta(BaseModel):
    model_config = OPEN
    model: config_schema(SpeechConfig)
    chars: Words  # the CTC blank, then the characters
    features: FeaturesSchema


MODEL_CONFIGS["speech"], META_SCHEMAS["speech"], SIZES["speech"] = SpeechConfig, SpeechMeta, [("chars", "num_chars")]

def check_model_meta(meta, task: str, path) -> dict:
    """`meta` (a best checkpoint's JSON) if it fits `task`'s schema; else a one-line UserError naming `path`."""
    if isinstance(meta, dict) and isinstance(meta.get("model"), dict):
        for other, cls in MODEL_CONFIGS.items():  # a model section of another task: say so, not "x is missing"
            if other != task and set(meta["model"]) == {f.name for f in dataclasses.fields(cls)}:
                raise UserError(f"{path}: its model section is a {other!r} model's, not a {task!r} model's")
    validate(META_SCHEMAS[task], meta, path)
    for where, size in SIZES[task]:
        items = meta
        for key in where.split("."):
            items = items.get(key) if isinstance(items, dict) else None
        if items is not None and len(items) != meta["model"][size]:
            raise UserError(f"{path}: {where} holds {len(items)} entries, but model.{size} is {meta['model'][size]}")
    return meta


def check_task(run_dir, task: str) -> None:
    """UserError unless the run folder's config.json (where it has one) names `task`."""
    if not (Path(run_dir) / "config.json").is_file():
        return
    found = read_task(run_dir)
    if found != task:
        raise UserError(f"{run_dir} is a {found!r} run (its config.json says so), not a {task!r} run")


def validate(schema: type[BaseModel], data, path) -> None:
    """schema.model_validate(data), with the first error as a one-line UserError: `path: field problem, got x`."""
    try:
        schema.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{path}: {_describe(e.errors()[0])}") from None


def _describe(error: dict) -> str:
    where = ".".join(str(part) for part in error["loc"])
    kind, ctx, got = error["type"], error.get("ctx", {}), _short(error["input"])
    if kind == "missing":
        return f"{where} is missing"
    if kind == "extra_forbidden":
        return f"{where} is not a known field"
    if kind in ("greater_than_equal", "less_than_equal"):
        return f"{where} must be {'>=' if kind == 'greater_than_equal' else '<='} {ctx.get('ge', ctx.get('le'))}, got {got}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"{where or 'the file'} must be a JSON object, got {got}"
    if kind == "literal_error":
        return f"{where} must be one of {ctx['expected']}, got {got}"
    message = error["msg"][0].lower() + error["msg"][1:]
    return f"{where or 'the file'}: {message}, got {got}"


def _short(value) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- the last checkpoint: what --resume restores ------------------------------------------------------------

Count = Annotated[int, Field(ge=0)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class PositionSchema(BaseModel):  # recurrent.train.loop.Position
    model_config = STRICT
    step: Count
    epoch: Annotated[int, Field(ge=1)]
    batch: Count
    best: Finite | None
    best_step: Count | None
    evals_since_best: Count
    skipped: Count
    evaluated_step: Count | None = None  # absent from checkpoints saved before it existed


class RNGSchema(BaseModel):  # recurrent.checkpoint.rng_state
    model_config = ConfigDict(extra="forbid")  # lax: JSON gives lists where random.getstate() has tuples
    python: tuple[Literal[3], Annotated[list[Annotated[int, Field(strict=True, ge=0, lt=2**32)]],
                                        Field(min_length=625, max_length=625)], Finite | None]
    numpy: tuple[Literal["MT19937"], Annotated[list[Annotated[int, Field(strict=True, ge=0, lt=2**32)]],
                                                Field(min_length=624, max_length=624)],
                 Annotated[int, Field(strict=True, ge=0, le=624)], Literal[0, 1], Finite]
    cuda_devices: Annotated[int, Field(strict=True, ge=0, le=1024)]


class OptimizerSchema(BaseModel):  # recurrent.checkpoint.flatten_optimizer_state
    model_config = STRICT
    state: dict[str, dict[str, Any]]
    param_groups: Annotated[list[dict[str, Any]], Field(min_length=1)]


class ScheduleSchema(BaseModel):  # recurrent.train.common.Schedule.state_dict
    model_config = STRICT
    scale: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    best: Finite | None
    bad_evals: Count


class ClipSchema(BaseModel):  # recurrent.train.common.ClipStats.state_dict
    model_config = STRICT
    norms: list[float]
    clipped: Count
    steps: Count | None = None  # absent in checkpoints saved before it: then every step's norm is in `norms`


class LastSchema(BaseModel):  # recurrent.train.loop._save_last, beside the task's own meta
    model_config = OPEN
    optimizer: OptimizerSchema
    rng: RNGSchema
    carry: Annotated[list[Literal["LSTMState", "RNNState"]], Field(max_length=MAX_LAYERS)] | None
    position: PositionSchema
    schedule: ScheduleSchema
    clip: ClipSchema


def check_last_meta(meta, path, tensors=None, task: str | None = None) -> dict:
    """`meta` (last.json) if it holds what a resumed run restores; else a one-line UserError naming `path`.
    With `tensors` (last.safetensors' tensors, or just their names), every tensor the meta refers to must be
    there; with `task`, the model section must fit that task's schema."""
    validate(LastSchema, meta, path)
    clip = meta["clip"]
    steps = len(clip["norms"]) if clip.get("steps") is None else clip["steps"]
    if clip["clipped"] > steps or len(clip["norms"]) > steps:
        raise UserError(f"{path}: clip.clipped is {clip['clipped']} and clip.norms holds {len(clip['norms'])}, "
                        f"more than the {steps} steps")
    if task is not None:
        check_model_meta(meta, task, path)
    if tensors is not None:
        for name in _tensors_named(meta):
            if name not in tensors:
                raise UserError(f"{path} refers to tensor {name!r}, which {Path(path).with_suffix('.safetensors')} "
                                f"does not hold")
    return meta


def _tensors_named(meta: dict) -> list[str]:
    """The tensor names a last.json refers to: the optimizer's, the RNGs' and the carried state's."""
    names = ["rng.torch"] + [f"rng.cuda.{i}" for i in range(meta["rng"]["cuda_devices"])]

    def walk(value):
        if isinstance(value, dict) and isinstance(value.get("tensor"), str):
            names.append(value["tensor"])
        elif isinstance(value, (dict, list)):
            for v in value.values() if isinstance(value, dict) else value:
                walk(v)
    walk(meta["optimizer"])
    fields = {"LSTMState": 2, "RNNState": 1}
    names += [f"carry.{l}.{i}" for l, kind in enumerate(meta["carry"] or []) for i in range(fields[kind])]
    return names

