"""sage-harness: the machinery (studies, scheduling, tracking, results, reports) around sage_model."""

__version__ = "0.1.0"
