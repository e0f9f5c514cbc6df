"""keymon: continuous health monitoring of exchange API keys.

keymon audits every configured API key on the exchange's own read-only API (permissions,
IP restriction, age, review deadlines), judges the facts against the desk's policy and
reports findings through ``keymon check``, Prometheus metrics and notifications.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
