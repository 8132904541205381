"""Two-stage training of SAGE: seeding, the trainer, checkpoint/resume."""

from sage_model.train.seeding import seed_everything
from sage_model.train.trainer import EpochReport, TrainingVocabulary, TrainSummary, train_two_stage

__all__ = ["EpochReport", "TrainSummary", "TrainingVocabulary", "seed_everything", "train_two_stage"]
