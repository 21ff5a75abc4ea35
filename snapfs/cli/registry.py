"""The shape of a subcommand module: ``register(add: AddCommand) -> None`` calls
``add(name, handler, help)`` and gets a parser that already has the common options."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]
AddCommand = Callable[[str, Handler, str], argparse.ArgumentParser]
