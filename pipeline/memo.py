"""A bounded, thread-safe memo of the entries used last, keyed by a digest of their text.

Several stages remember what they computed for a text (a request's vector, a unit's embedding, a
chunk's injection score) because a batch repeats the same texts thousands of times; one small class
keeps that pattern, and its lock, in one place."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

V = TypeVar("V")


def text_key(text: str) -> bytes:
    """A 16-byte digest of the text: the memo's key, so the memo holds no text itself."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class LruMemo(Generic[V]):
    """The last ``size`` entries read or written (``size`` 0 remembers nothing)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, V]:
        """The remembered entries among ``keys``; each one found counts as just used."""
        found: dict[bytes, V] = {}
        with self._lock:
            for key in keys:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    found[key] = self._entries[key]
        return found

    def get(self, key: bytes) -> V | None:
        return self.get_many((key,)).get(key)

    def put_many(self, entries: Mapping[bytes, V]) -> None:
        """Remember ``entries``, forgetting the least recently used beyond ``size``."""
        with self._lock:
            self._entries.update(entries)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def put(self, key: bytes, value: V) -> None:
        self.put_many({key: value})
