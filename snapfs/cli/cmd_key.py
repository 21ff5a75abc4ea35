"""``snapfs key list | add | remove ID | passwd``: the passwords that open a repository."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import UTC, datetime
from typing import Any

from snapfs.cli.commands import open_repo
from snapfs.cli.output import print_json
from snapfs.cli.registry import AddCommand
from snapfs.errors import EXIT_OK, UsageError
from snapfs.maintenance.keys import KeyInfo, add_key, change_password, list_keys, remove_key

ACTIONS = {
    "list": "list the key files; * marks the one the password opened",
    "add": "add a password (a new key file for the same master key)",
    "remove": "remove a key file (never the last one, nor the one in use)",
    "passwd": "change the password: add a new key file, then remove the current one",
}


def register(add: AddCommand) -> None:
    p = add("key", cmd_key, "list, add, remove or change the passwords of a repository")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_text in ACTIONS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text, prog=f"snapfs key {name}")
        _repeat_options(p, sp)
        if name == "remove":
            sp.add_argument("id", metavar="ID", help="key id or a unique prefix of it")
        if name in ("add", "passwd"):
            sp.add_argument(
                "--new-password-file",
                metavar="FILE",
                help="read the new password from this file (default: $SNAPFS_NEW_PASSWORD)",
            )


def _repeat_options(parent: argparse.ArgumentParser, child: argparse.ArgumentParser) -> None:
    """The common options (-r, --json, ...) after the action word too. Without a default
    of their own, so one given before the action word is not reset."""
    for action in parent._actions:
        if not action.option_strings or action.dest == "help":
            continue
        kwargs: dict[str, Any] = {"dest": action.dest, "help": action.help}
        if action.nargs == 0:  # a flag
            kwargs |= {"action": "store_const", "const": action.const}
        else:
            kwargs |= {"type": action.type, "metavar": action.metavar}
        child.add_argument(*action.option_strings, default=argparse.SUPPRESS, **kwargs)


def read_secret(
    *, path: str | None, env: str, env_file: str | None, prompt: str, confirm: bool
) -> bytes:
    """A password other than the repository's own, by the rules of cli/password.py: the
    file given on the command line, else the variable ``env``, else the file named by
    ``env_file``, else a TTY prompt. Never a command-line argument."""
    value = os.environ.get(env)
    if path is None and value is None and env_file:
        path = os.environ.get(env_file) or None
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read().rstrip("\r\n")
        except OSError as e:
            raise UsageError(f"cannot read password file {path}: {e.strerror}") from None
    elif value is None:
        if sys.stdin is None or not sys.stdin.isatty():
            sources = f"set {env}" + (f" or {env_file}" if env_file else "")
            raise UsageError(f"no {prompt}: {sources}, or pass a password file")
        try:
            value = getpass.getpass(f"{prompt}: ")
            if confirm and getpass.getpass(f"repeat {prompt}: ") != value:
                raise UsageError("the passwords do not match")
        except EOFError:
            raise UsageError("no password entered") from None
    if not value:
        raise UsageError(f"the {prompt} is empty")
    return value.encode("utf-8")


def _new_password(args: argparse.Namespace) -> bytes:
    return read_secret(
        path=args.new_password_file,
        env="SNAPFS_NEW_PASSWORD",
        env_file=None,
        prompt="new password",
        confirm=True,
    )


def _when(created: str) -> str:
    try:
        return datetime.fromisoformat(created).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return created


def _key_json(k: KeyInfo) -> dict[str, object]:
    return {
        "id": k.short_id,
        "name": k.hex,
        "created": k.created,
        "host": k.host,
        "username": k.username,
        "current": k.current,
    }


def cmd_key(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        if args.action == "list":
            keys = list_keys(repo)
            if args.json:
                print_json([_key_json(k) for k in keys])
            elif not args.quiet:
                print(f"  {'ID':<9} {'Created (UTC)':<20} {'Host':<16} User")
                for k in keys:
                    mark = "*" if k.current else " "
                    print(
                        f"{mark} {k.short_id:<9} {_when(k.created):<20} {k.host:<16} {k.username}"
                    )
                n = len(keys)
                print(f"{n} key{'s' * (n != 1)}; * = the key this password opened")
            return EXIT_OK
        if args.action == "remove":
            removed = remove_key(repo, args.id)
            if args.json:
                print_json({"removed": _key_json(removed)})
            elif not args.quiet:
                print(f"removed key {removed.short_id}")
            return EXIT_OK
        password = _new_password(args)
        old = repo.key_name
        if args.action == "add":
            new = add_key(repo, password)
            if args.json:
                print_json({"added": _key_json(new)})
            elif not args.quiet:
                print(f"added key {new.short_id}")
            return EXIT_OK
        new = change_password(repo, password)
        old_id = old.removeprefix("keys/")
        if args.json:
            print_json({"added": _key_json(new), "removed": {"id": old_id[:8], "name": old_id}})
        elif not args.quiet:
            print(f"password changed: key {new.short_id} replaces key {old_id[:8]}")
        return EXIT_OK
