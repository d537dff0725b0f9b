"""Storage, zarr-style: the interface (``base``), local disk (``local``), tensorstore kvstores
(``kvstore``, ``object_store``), the URL resolver (``resolver``), and the sweep of what crashed
local saves left (``leftovers``).

Layers above import only what is re-exported here: the interface and :func:`resolve`. They never
name a backend; they ask ``store.capabilities``.
"""

from jaxsaver._store.base import Capabilities as Capabilities
from jaxsaver._store.base import ObjectWriter as ObjectWriter
from jaxsaver._store.base import PositionalFile as PositionalFile
from jaxsaver._store.base import Store as Store
from jaxsaver._store.leftovers import cleanup as cleanup
from jaxsaver._store.leftovers import in_flight as in_flight
from jaxsaver._store.resolver import canonical_key as canonical_key
from jaxsaver._store.resolver import resolve as resolve

__all__ = ["Capabilities", "ObjectWriter", "PositionalFile", "Store", "cleanup", "canonical_key", "in_flight", "resolve"]
