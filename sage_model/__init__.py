"""SAGE: semantic-guided open-vocabulary video visual relationship detection.

The science lives here (data, model, training, evaluation); it imports no harness, Ray, MLflow
or YAML code, so a researcher can use it from a notebook.
"""

__version__ = "0.1.0"
