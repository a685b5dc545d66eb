"""`lipkit <command>`: commands live in lipkit.commands, one module each.

Errors a user can fix (subclasses of LipkitError) print one line and exit 2; so do the file-system
errors of the machine rather than of lipkit (a full disk, a read-only or forbidden folder)."""
from __future__ import annotations

import argparse
import errno
import importlib
import sys

from lipkit.commands import COMMANDS
from lipkit.errors import LipkitError


_USER_FIXABLE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lipkit", description="Language-image pre-training and evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"lipkit.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LipkitError as e:
        print(f"lipkit: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in _USER_FIXABLE_ERRNOS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"lipkit: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lipkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
