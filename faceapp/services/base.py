"""What every part of the :class:`~faceapp.services.FaceService` facade shares: its
:class:`~faceapp.services.core.Core` and the lock that serialises public calls."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from faceapp.errors import GalleryError
from faceapp.services.core import Core

_F = TypeVar("_F", bound=Callable[..., Any])


class ServiceBase:
    """A core behind a lock: public methods decorated with :func:`serialised` run one at a
    time and refuse to run once the service is closed."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._lock = threading.RLock()
        self._closed = False

    @property
    def core(self) -> Core:
        """The parts the use cases share (for :mod:`faceapp.services.live`)."""
        return self._core

    def _check_open(self) -> None:
        if self._closed:
            raise GalleryError("the face service is closed")


def serialised(method: _F) -> _F:
    """Run a public method under the service lock, after checking the service is open."""

    @functools.wraps(method)
    def wrapper(self: ServiceBase, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self._check_open()
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
