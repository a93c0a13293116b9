"""What every ``edge`` command shares: the common options, the context, one-line failures.

``--config``, ``--db``, ``--json`` and ``--create`` are declared once (:func:`common`);
:class:`Ctx` opens the config and the gallery lazily; :func:`fail` is the one
way a command refuses (one ``edge: ...`` line and an exit code). The commands
themselves live in ``edge/cli_*.py`` by theme; :mod:`edge.cli` gathers them.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from .errors import ConfigError, EdgeError

F = TypeVar("F", bound=Callable[..., Any])


class Ctx:
    """What every command shares: the options, and the config and gallery opened lazily."""

    def __init__(
        self, config: str | None, db: str | None, as_json: bool, create: bool = False
    ) -> None:
        self.config_path = config
        self.db_path = db
        self.json = as_json
        self.create = create
        self._cfg: Any = None

    @property
    def cfg(self) -> Any:
        if self._cfg is None:
            from .config import load_config

            self._cfg = load_config(self.config_path)
        return self._cfg

    def db(self) -> Path:
        cfg = self.cfg  # a broken config is refused even when --db is given
        return Path(self.db_path) if self.db_path else cfg.path(cfg.gallery.db)

    def gallery(self, create: bool = False) -> Any:
        """The gallery; a missing one is refused unless ``create`` or ``--create``."""
        from .gallery import open_gallery

        return open_gallery(self.cfg, self.db(), actor(), create=create or self.create)

    def fleet(self, url: str) -> Any:
        """An admin session with the fleet's central store (``url`` "": the configured one)."""
        from .cli_fleet import admin

        return admin(self.cfg, url, actor())

    def engine(self) -> Any:
        from .engine import Engine

        return Engine(self.cfg)

    def emit(self, obj: Any, text: str | None = None) -> None:
        """Print ``obj`` as JSON with --json, else ``text`` (when given)."""
        if self.json:
            click.echo(json.dumps(obj, ensure_ascii=False))
        elif text is not None:
            click.echo(text)


def actor() -> str:
    """Who is running the command: the sudo caller, else the login name."""
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def bundle_passphrase(confirm: bool) -> str:
    """$EDGE_BUNDLE_PASSPHRASE, else asked on the terminal (twice to seal a bundle)."""
    env = os.environ.get("EDGE_BUNDLE_PASSPHRASE")
    if env:
        return env
    if not sys.stdin.isatty():
        fail("set EDGE_BUNDLE_PASSPHRASE, or run in a terminal to be asked", 2)
    return str(
        click.prompt("Bundle passphrase", hide_input=True, confirmation_prompt=confirm, err=True)
    )


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"edge: {message}", err=True)
    sys.exit(code)


class PathArg(click.Path):
    """A click.Path whose refusal is one line naming the path and the reason.

    click's own is a three-line Usage/Try/Error block; every other bad input
    of ``edge`` is one ``edge: ...`` line, so a path is too (exit 2).
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as e:
            reason = e.message.split("' ", 1)[-1].rstrip(".")
            reason = reason.replace("is a directory", "is a folder, not a file")
            option = param.opts[0] if param is not None and param.opts else ""
            what = f"{option} {value}" if option.startswith("-") else str(value)
            fail(f"{what}: {reason}", 2)


def common(f: F) -> F:
    """--config, --db and --json for every command, declared once."""

    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.option(
        "--create", is_flag=True, help="Create the gallery if --db names none yet."
    )
    @click.option(
        "--db",
        envvar="EDGE_DB",
        type=PathArg(dir_okay=False),
        help="Gallery database (default: gallery.db in the config).",
    )
    @click.option(
        "--config",
        envvar="EDGE_CONFIG",
        type=PathArg(dir_okay=False),
        help="Configuration file (default: config.yaml).",
    )
    @functools.wraps(f)
    def wrapper(
        config: str | None, db: str | None, as_json: bool, create: bool, **kw: Any
    ) -> Any:
        ctx = Ctx(config, db, as_json, create)
        with one_line_errors():
            return f(ctx, **kw)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """What every command does with our errors: one line and the exit code.

    A bad config exits 2, any other :class:`EdgeError` 1, Ctrl-C 130; never a traceback.
    """
    try:
        yield
    except ConfigError as e:
        fail(str(e), 2)
    except EdgeError as e:
        fail(str(e), 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)
