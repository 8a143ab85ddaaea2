"""Trainers. `train_lm(TrainLMConfig(...)) -> run_dir` trains a language model; recurrent.inference.lm loads and
scores it (`load_lm(run_dir).evaluate(text)`)."""
from recurrent.train.lm import TrainLMConfig, train_lm

__all__ = ["TrainLMConfig", "train_lm"]
