"""Operate tipkit: the operator API behind ``tipkit ops`` and ``tipkit console``.

:class:`Operator` reads and acts on a store's flags, rollouts, breakers and
limits, every action audited with an actor and a reason; :func:`open_store`
opens what ``--store``/``--prefix`` (or ``TIPKIT_STORE``/``TIPKIT_STORE_PREFIX``)
point at. See ``docs/operate.md``.
"""

from __future__ import annotations

from tipkit.ops._api import Conflict, Operator, Refused
from tipkit.ops._stores import open_store, serve_memory

__all__ = ["Conflict", "Operator", "Refused", "open_store", "serve_memory"]
