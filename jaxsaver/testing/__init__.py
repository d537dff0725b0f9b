"""Test helpers for users of jaxsaver: the store conformance suite and a counting store wrapper.

Importing this package imports pytest (``import jaxsaver`` itself never does).
"""

from jaxsaver.testing.counting import CountingStore as CountingStore
from jaxsaver.testing.store import StoreTests as StoreTests

__all__ = ["CountingStore", "StoreTests"]
