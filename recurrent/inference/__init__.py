"""Using a trained run: one module per task, each a loader (`load_*(run_dir, device)`) returning an object that
holds the model with its vocabularies, and the scoring the CLI's evaluate does. recurrent/train/ has the trainers
of the same names; they import from here, never the reverse, so running a saved model imports no trainer.

    lm.py         LM (model, vocab), load_lm, evaluate_lm -> LMScore, evaluate_loss
    classify.py   Classifier, load_classifier, evaluate_classifier -> ClassificationReport
    tag.py        Tagger, load_tagger, evaluate_tagger -> TaggingReport
    translate.py  Translator, load_translator, Translation
    common.py     the run folder's best checkpoint, word-list specials, confusion matrix and macro-F1
"""
from recurrent.inference.classify import Classifier, load_classifier
from recurrent.inference.lm import LM, load_lm
from recurrent.inference.tag import Tagger, load_tagger
from recurrent.inference.translate import Translator, load_translator

__all__ = ["LM", "load_lm", "Classifier", "load_classifier", "Tagger", "load_tagger", "Translator", "load_translator"]
