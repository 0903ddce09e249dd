"""A tiny named-factory registry shared by the backends of one stage."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from pipeline.base.errors import UnknownName

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps backend names to factories; an unknown name raises :class:`UnknownName` (a config error)
    listing the valid ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._factories[name] = factory
            return factory

        return deco

    def names(self) -> list[str]:
        return sorted(self._factories)

    def check(self, name: str) -> str:
        """``name`` if registered, else :class:`UnknownName` listing the valid names."""
        if name not in self._factories:
            raise UnknownName(f"unknown {self.kind} {name!r}; valid: {self.names()}")
        return name

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def create(self, name: str, **kwargs) -> T:
        try:
            factory = self._factories[name]
        except KeyError:
            raise UnknownName(
                f"Wrong {self.kind} name `{name}`, supported {self.kind}s: {self.names()}"
            ) from None
        return factory(**kwargs)
