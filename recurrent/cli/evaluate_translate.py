"""`recurrent evaluate RUN --src test.de --tgt test.en` for a translation model: BLEU, chrF and perplexity.

    test BLEU 31.2  chrF 57.4  perplexity 8.9  (beam 5; 1000 sentences)

Hypotheses are detokenised (the vocabulary's decoder puts the original spacing back) and scored by sacrebleu
against the --tgt lines as they are in the file: raw text for raw files, tokenised lowercased text for
Multi30k's tok/ files (then BLEU is on that tokenisation). A model trained with --lowercase is scored
case-insensitively (sacrebleu's lowercase=True). Perplexity is teacher-forced on the references.
"""
from __future__ import annotations

import argparse
import sys

import sacrebleu

from recurrent.data.parallel import read_lines
from recurrent.errors import UserError
from recurrent.inference.translate import load_translator


def evaluate(args: argparse.Namespace) -> int:
    if not args.src or not args.tgt:
        raise UserError("evaluating a translation model needs --src FILE and --tgt FILE")
    src, refs = read_lines(args.src), read_lines(args.tgt)
    if len(src) != len(refs):
        raise UserError(f"source and target differ in length: {args.src} has {len(src)} lines, "
                        f"{args.tgt} has {len(refs)}")
    translator = load_translator(args.run, args.device)
    keep = [i for i in range(len(src)) if src[i].strip() and refs[i].strip()]
    if not keep:
        raise UserError(f"{args.src} and {args.tgt} hold no sentence pairs")
    src, refs = [src[i] for i in keep], [refs[i] for i in keep]
    hyps = [r.text for r in translator.translate(src, args.beam, args.batch_size, progress=True)]
    scores = score(hyps, refs, lowercase=translator.lowercase)
    ppl = translator.perplexity(src, refs)
    print(f"{args.name} BLEU {scores['bleu']:.2f}  chrF {scores['chrf']:.2f}  perplexity {ppl:.2f}  "
          f"(beam {args.beam}; {len(src)} sentences)")
    print(f"sacrebleu: {scores['signature']}", file=sys.stderr)
    return 0


def score(hypotheses: list[str], references: list[str], lowercase: bool = False) -> dict:
    """Corpus BLEU and chrF (sacrebleu) of detokenised hypotheses against one reference each."""
    bleu = sacrebleu.metrics.BLEU(lowercase=lowercase)
    chrf = sacrebleu.metrics.CHRF(lowercase=lowercase)
    b = bleu.corpus_score(hypotheses, [references])
    return {"bleu": b.score, "chrf": chrf.corpus_score(hypotheses, [references]).score,
            "signature": str(bleu.get_signature())}

