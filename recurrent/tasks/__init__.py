"""Synthetic tasks generated on the fly from a seeded torch.Generator."""
from recurrent.tasks.memory import AddingTask, CopyTask, MemoryModel, TrainConfig, TrainResult, make_task, train_memory

__all__ = ["AddingTask", "CopyTask", "MemoryModel", "TrainConfig", "TrainResult", "make_task", "train_memory"]
