"""SAGE modules: semantic enhancement, spatio-temporal modelling, class-aware prompting, losses."""

from sage_model.model.sage import ModelOutput, SageModel, build_model

__all__ = ["ModelOutput", "SageModel", "build_model"]
