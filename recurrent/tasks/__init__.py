"""Synthetic tasks generated on the fly from a seeded torch.Generator."""
from recurrent.tasks.memory import (AddingTask, CopyTask, MemoryModel, MemoryModelConfig, MemoryTask, TrainMemoryConfig,
                                    TrainResult, load_memory_model, make_task, train_memory)

__all__ = ["AddingTask", "CopyTask", "MemoryModel", "MemoryModelConfig", "MemoryTask", "TrainMemoryConfig",
           "TrainResult", "load_memory_model", "make_task", "train_memory"]
