"""`recurrent evaluate RUN --data test.tsv` for a speech recogniser: WER and CER, greedy and with --beam.

    test greedy WER 0.012 CER 0.004
    test beam 5 WER 0.010 CER 0.004
"""
from __future__ import annotations

import argparse

from recurrent.errors import UserError


def evaluate(args: argparse.Namespace) -> int:
    from recurrent.speech.inference import load_recognizer

    if not args.data:
        raise UserError("evaluating a speech recogniser needs --data MANIFEST (path<TAB>transcript lines)")
    report = load_recognizer(args.run, args.device).evaluate(args.data, args.beam)
    print(f"{args.name} greedy WER {report['greedy_wer']:.4f} CER {report['greedy_cer']:.4f}")
    print(f"{args.name} beam {args.beam} WER {report['beam_wer']:.4f} CER {report['beam_cer']:.4f}")
    return 0
