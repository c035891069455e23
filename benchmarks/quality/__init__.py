"""Model-quality benchmark: Beryl against a hand-written scikit-learn pipeline (see README.md)."""
