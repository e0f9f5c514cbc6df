"""keymon: continuous health monitoring of exchange API keys.

keymon audits every configured API key on the exchange's own read-only API (permissions,
IP restriction, age, review deadlines), judges the facts against the desk's policy and
reports findings through ``keymon check``, Prometheus metrics and notifications.
"""

import sys

__version__ = "0.1.0"

# httpx imports its command-line client (httpx._main: click, and rich and pygments where they
# are installed) whenever it can, and apprise brings click along: keymon never runs that
# client, so it is marked absent before httpx is first imported, and httpx falls back to its
# stub ``main`` (measured: 19 fewer modules at every start, `keymon check` included). No effect
# where httpx was imported before keymon.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

__all__ = ["__version__"]
