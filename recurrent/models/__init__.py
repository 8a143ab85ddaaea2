"""Task models built from recurrent layers."""
from recurrent.models.classifier import ClassifierConfig, ClassifierOutput, SequenceClassifier
from recurrent.models.crf import CRF
from recurrent.models.lm import LanguageModel, LMConfig, LMOutput
from recurrent.models.seq2seq import Seq2Seq, Seq2SeqConfig, Seq2SeqOutput
from recurrent.models.tagger import SequenceTagger, TaggerConfig, TaggerOutput
from recurrent.models.tree import TreeClassifier

__all__ = ["LanguageModel", "LMConfig", "LMOutput", "SequenceClassifier", "ClassifierConfig", "ClassifierOutput",
           "SequenceTagger", "TaggerConfig", "TaggerOutput", "CRF", "Seq2Seq", "Seq2SeqConfig", "Seq2SeqOutput", "TreeClassifier"]
