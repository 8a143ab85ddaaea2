"""Word and character error rates (jiwer): edit distance over the reference's length, pooled over a corpus.

    error_rates(["one two", "three"], ["one too", "three"])   # {"wer": 0.333, "cer": 0.083}
"""
from __future__ import annotations


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """{"wer", "cer"} over the corpus: total edits / total reference words (characters). An empty hypothesis is
    all deletions."""
    import jiwer

    return {"wer": float(jiwer.wer(references, hypotheses)), "cer": float(jiwer.cer(references, hypotheses))}
