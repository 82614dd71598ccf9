"""Evaluation: trec_eval-exact metrics, the runner (data set + backend -> report) and report writers.
Depends only on the kernel: it never imports models or index backends."""

from uniret.eval.metrics import DEFAULT_METRICS, evaluate, ranked, truncate_run
from uniret.eval.runner import EvalResult, evaluate_backend

__all__ = ["DEFAULT_METRICS", "EvalResult", "evaluate", "evaluate_backend", "ranked", "truncate_run"]
