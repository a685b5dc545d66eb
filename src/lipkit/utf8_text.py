"""Text files are UTF-8: a byte-order mark is accepted and dropped, anything else is refused with
the file, line and column of the first byte that is not UTF-8. Never decoded into replacement
characters, so a caption is either read as written or not used at all.

Imports nothing of lipkit but its error base, so every layer can use it."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lipkit.errors import LipkitError

BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class NotUtf8Error(LipkitError, ValueError):
    """Text that is not UTF-8: `where` is file:line:column, `reason` says what was found."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


def _refusal(data: bytes, bad: int, where: str, first_line: int = 1) -> NotUtf8Error:
    line_start = data.rfind(b"\n", 0, bad) + 1
    line = data.count(b"\n", 0, bad) + first_line
    column = len(data[line_start:bad].decode("utf-8", errors="replace")) + 1
    hint = " (a UTF-16 byte-order mark)" if data[:2] in _UTF16_BOMS and bad < 2 else ""
    return NotUtf8Error(f"{where}:{line}:{column}", f"not UTF-8 text (byte 0x{data[bad]:02X}){hint}; "
                                                    f"save it as UTF-8, e.g. iconv -f latin1 -t utf-8")


def decode_utf8(data: bytes, where: str) -> str:
    """`data` as text; `where` (a file name, or shard:member) names it in the error."""
    if data.startswith(BOM):
        data = data[len(BOM):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _refusal(data, e.start, where) from None


def read_utf8(path: str | Path) -> str:
    return decode_utf8(Path(path).read_bytes(), str(path))


def utf8_lines(path: str | Path) -> Iterator[str]:
    """The lines of a text file, line ends kept (what the csv module wants), decoded one at a time
    so a large file is never held whole; the first byte that is not UTF-8 stops with its line."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _refusal(raw, e.start, str(path), first_line=number) from None
