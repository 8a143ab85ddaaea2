"""Data for language modelling: text files, vocabularies, and truncated-BPTT batches."""
from recurrent.data.streams import batchify, bptt_batches, num_bptt_batches
from recurrent.data.text import Corpus, Vocab, load_corpus, read_text

__all__ = ["read_text", "Corpus", "load_corpus", "Vocab", "batchify", "bptt_batches", "num_bptt_batches"]
