"""Evaluation for ``sigma eval``: the papers' metrics (:mod:`.metrics`) over generated rows."""

from .metrics import METRICS, EvalRow, Metric, ModelLoader, available_metrics, build_metrics

__all__ = ["METRICS", "EvalRow", "Metric", "ModelLoader", "available_metrics", "build_metrics"]
