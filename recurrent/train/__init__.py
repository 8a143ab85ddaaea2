"""Trainers. `train_lm(TrainLMConfig(...)) -> run_dir` trains a language model; `load_lm` and `evaluate_lm` use it."""
from recurrent.train.lm import LMScore, TrainLMConfig, evaluate_lm, load_lm, train_lm

__all__ = ["TrainLMConfig", "train_lm", "load_lm", "evaluate_lm", "LMScore"]
