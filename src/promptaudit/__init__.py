"""promptaudit: fairness and interpretability audits for tuned (soft) prompts."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
