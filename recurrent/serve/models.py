"""The run folders a server holds: each loaded once, named, and tied to the endpoint of its task.

    served = load_models(["runs/shakespeare", "runs/sent"], max_batch=64)
    served["shakespeare"].task, served["shakespeare"].endpoint      # "lm", "/generate"

A model is named by its run folder's name ("shakespeare"; a second folder of the same name becomes
"shakespeare-2"), so that no request ever names a path: a request picks one of these names or none.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from recurrent.errors import UserError
from recurrent.inference.common import BEST
from recurrent.precision import Precision
from recurrent.runs import read_task

# The endpoint that serves each task; a run of a task missing here is refused when the server starts.
ENDPOINTS = {"lm": "/generate", "classify": "/predict", "tag": "/predict", "translate": "/translate",
             "forecast": "/forecast", "speech": "/transcribe"}


@dataclass
class Served:
    name: str
    task: str
    run: str  # the folder's name
    model: object  # LM, Classifier, Tagger, Translator, Forecaster (recurrent.inference) or Recognizer
    meta: dict  # the checkpoint's JSON (model.json)
    engine: object | None = None  # an LM's BatchEngine
    lock: threading.Lock = field(default_factory=threading.Lock)  # one forward at a time (all but lm)

    @property
    def endpoint(self) -> str:
        return ENDPOINTS[self.task]

    def details(self) -> dict:
        """What a client needs to build a request: vocabulary level and layer sizes, labels, tags."""
        if self.task == "lm":
            model, vocab = self.model.model, self.model.vocab
            return {"level": vocab.level, "vocab_size": len(vocab.itos), "cell": model.config.cell,
                    "layers": [layer.hidden_size for layer in model.layers], "labels": self.meta.get("labels"),
                    "condition_size": model.config.condition_size, "sentences": self.meta.get("sentences") is not None,
                    "max_batch": self.engine.max_batch,
                    "products": str(self.engine.dtype or torch.float32).removeprefix("torch.")}
        if self.task == "classify":
            return {"labels": self.model.labels, "trees": self.model.reads_trees}
        if self.task == "tag":
            return {"tags": self.model.tags}
        if self.task == "forecast":
            meta = self.meta
            return {"horizon": meta["horizon"], "season": meta["season"], "step": meta["step"],
                    "timestamps": meta["step"] is not None, "past_length": meta["past_length"],
                    "architecture": meta["model"]["architecture"],
                    "ids": meta["ids"] if meta["model"]["embedding_size"] else None}  # None: any id
        if self.task == "speech":
            rec = self.model
            return {"sample_rate": rec.features.sample_rate, "bidirectional": rec.model.config.bidirectional,
                    "stream": not rec.model.config.bidirectional and rec.features.normalize != "utterance",
                    "characters": "".join(rec.vocab.itos[1:])}
        return {"attention": self.model.model.uses_attention, "max_len": self.model.max_len}


def load_models(runs: list[str], max_batch: int = 64, device: str = "cpu",
                precision: Precision | None = None, threads: int | None = None) -> dict[str, Served]:
    """name -> Served for each run folder, in order; a UserError for a folder that cannot be served. precision
    (recurrent.precision.choose; None: float32) sets the dtype of generation's per-token products; threads, the
    intra-op threads of each generation engine's thread (None: torch's default there)."""
    served: dict[str, Served] = {}
    for run in runs:
        task = read_task(run)
        if task not in ENDPOINTS:
            raise UserError(f"{run} is a {task!r} run; serve runs {', '.join(sorted(ENDPOINTS))} runs")
        base = Path(run).resolve().name
        name, n = base, 1
        while name in served:
            n += 1
            name = f"{base}-{n}"
        model, engine = _load(run, task, device), None
        meta = json.loads((Path(run) / f"{BEST}.json").read_text(encoding="utf-8"))
        if task == "lm":
            from recurrent.serve.app import Relay
            from recurrent.serve.engine import BatchEngine

            if model.model.config.condition_every_step:
                raise UserError(f"{run} is fed its condition at every step; serve batches models conditioned "
                                "through their initial state only (use `recurrent generate` for this one)")
            engine = BatchEngine(model.model, max_batch, Relay(), precision.dtype if precision else None, threads)
        served[name] = Served(name, task, base, model, meta, engine)
    return served


def _load(run: str, task: str, device: str):
    if task == "lm":
        from recurrent.inference.lm import load_lm
        return load_lm(run, device)
    if task == "classify":
        from recurrent.inference.classify import load_classifier
        return load_classifier(run, device)
    if task == "tag":
        from recurrent.inference.tag import load_tagger
        return load_tagger(run, device)
    if task == "forecast":
        from recurrent.inference.forecast import load_forecaster
        return load_forecaster(run, device)
    if task == "speech":
        from recurrent.speech.inference import load_recognizer
        return load_recognizer(run, device)
    from recurrent.inference.translate import load_translator
    return load_translator(run, device)
