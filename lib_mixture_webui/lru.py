"""A small most-recently-used cache for keys that are compared, not hashed."""

from __future__ import annotations

from typing import Any, Iterator


class EqualityLRU:
    """Up to ``size`` ``(key, value)`` pairs, the most recent first; keys are compared with ``==``
    (the host's conditioning cache keys hold lists, so they cannot be hashed)."""

    def __init__(self, size: int):
        self.size = size
        self._items: list[tuple[Any, Any]] = []

    def get(self, key: Any, default: Any = None) -> Any:
        for i, (k, value) in enumerate(self._items):
            if k == key:
                self._items.insert(0, self._items.pop(i))
                return value
        return default

    def put(self, key: Any, value: Any) -> None:
        self._items = [(key, value)] + [(k, v) for k, v in self._items if k != key][:self.size - 1]

    def keys(self) -> Iterator[Any]:
        return iter([k for k, _ in self._items])

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
