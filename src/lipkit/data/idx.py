"""Reader for the IDX format (MNIST, Fashion-MNIST), optionally gzipped.

Layout: magic (2 zero bytes, a type byte, a dimension-count byte), then one big-endian uint32 per
dimension, then the data in C order. Only unsigned-byte data (type 0x08) is supported.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from .cache import DataSourceError

UBYTE = 0x08


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Parse `path` (gzipped if it ends in .gz) into a uint8 array with `ndim` dimensions.
    Magic 0x00000801 is a 1-d file (labels), 0x00000803 a 3-d file (images)."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataSourceError(f"{path}: cannot read ({e})") from None
    expected_magic = (UBYTE << 8) | ndim
    if len(raw) < 4 + 4 * ndim:
        raise DataSourceError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        raise DataSourceError(
            f"{path}: not an IDX file of {ndim}-d unsigned bytes "
            f"(magic 0x{magic:08x}, expected 0x{expected_magic:08x})"
        )
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    size = int(np.prod(dims, dtype=np.int64))
    if len(raw) - offset != size:
        raise DataSourceError(
            f"{path}: header says {'x'.join(map(str, dims))} = {size} bytes of data, file has {len(raw) - offset}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)
