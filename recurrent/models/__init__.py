"""Task models built from recurrent layers."""
from recurrent.models.lm import LanguageModel, LMConfig, LMOutput

__all__ = ["LanguageModel", "LMConfig", "LMOutput"]
