"""The serving benchmark: Beryl's ``POST /prediction`` against peers serving the same model.

``run`` is the command; ``workspace`` sets up the model and the request bodies, ``servers`` how
each peer starts, ``load`` the load generators and what they measure, ``verify`` the check of
every peer's answers against Beryl's, ``report`` the tables and targets, ``profiling`` py-spy.
"""
