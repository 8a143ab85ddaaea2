"""The server's limits on one request (`recurrent serve --max-...`): a plain dataclass, so that the command line
builds its flags from it without importing the web stack."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server: `recurrent serve` has a flag for each (--max-tokens ...)."""

    max_body: int = field(default=64 * 1024, metadata={"help": "bytes of a request body"})
    max_prime: int = field(default=4000, metadata={"help": "tokens of a prime (characters at char level)"})
    max_tokens: int = field(default=2000, metadata={"help": "tokens one /generate request may produce"})
    max_text: int = field(default=4000, metadata={"help": "characters of a text to classify, tag or translate"})
    max_beam: int = field(default=16, metadata={"help": "beam size of /translate and /transcribe"})
    max_seconds: float = field(default=60.0, metadata={"help": "wall time of one request (a generation stops "
                                                                "there, finish_reason timeout)"})
    max_waiting: int = field(default=256, metadata={"help": "generations queued beyond the batch before a 503"})
    max_series: int = field(default=100, metadata={"help": "series in one /forecast request"})
    max_values: int = field(default=10_000, metadata={"help": "values of one series"})
    max_quantiles: int = field(default=20, metadata={"help": "quantile levels of one /forecast request"})
    max_samples: int = field(default=1000, metadata={"help": "sample paths per series"})
    max_audio: int = field(default=10 * 1024 * 1024, metadata={"help": "bytes of a /transcribe body (the audio "
                                                                        "file; other bodies: --max-body)"})
    max_audio_seconds: float = field(default=60.0, metadata={"help": "seconds of audio in one /transcribe"})
