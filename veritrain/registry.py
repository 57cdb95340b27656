"""A tiny name -> object registry shared by models, datasets, bound domains, attacks and methods."""

from __future__ import annotations

from typing import Callable, Generic, Iterable, Iterator, TypeVar

from veritrain.errors import ConfigError

T = TypeVar("T")


class UnknownNameError(ConfigError, KeyError):
    """Raised for a name that is not registered; its message lists the known names.

    An invalid option value like any other (a `ConfigError`, hence a ValueError), and a KeyError as a failed
    lookup."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to objects (classes or factories). `kind` names what is registered, for errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)


def split_names(names: str | Iterable[str] | None) -> list[str]:
    """Registry names from "a,b, c" (an option value) or a list; blanks dropped, order kept."""
    if names is None:
        return []
    if isinstance(names, str):
        names = names.split(",")
    return [s.strip() for s in names if s and s.strip()]
