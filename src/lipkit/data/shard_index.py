"""The index of an uncompressed WebDataset shard, for evaluation: each sample's key, where its
image's bytes lie (read later at that offset, in any order) and its small fields (labels,
captions). A plain ustar/pax shard is walked header by header (lipkit.data.tar_headers); any other
tar, through `tarfile`."""
from __future__ import annotations

import tarfile
from dataclasses import dataclass

from .cache import DataSourceError
from .shards import _MAX_MEMBER_BYTES, IMAGE_FIELDS, _unsafe_name, split_key
from .tar_headers import Member, plain_members


@dataclass
class IndexedSample:
    """A sample of an uncompressed shard: where its image's bytes lie, and its small fields."""
    key: str
    image: tuple[int, int] | None  # (byte offset in the shard, size) of the first IMAGE_FIELDS member
    ext: str  # that member's extension
    fields: dict[str, bytes]  # the non-image members (cls, txt, json)


_SMALL_FIELDS = ("cls", "txt", "json")
_MAX_SMALL_BYTES = 1 << 20


def index_shard(path: str) -> tuple[list[IndexedSample], list[tuple[str, str]]]:
    """(samples, problems) of one uncompressed tar shard, reading only member headers and the
    small fields (labels, captions): the images stay on disk, to be read later at their offsets
    (random access, so any subset can be decoded in any order). A plain ustar shard is walked
    header by header (lipkit.data.tar_headers); any other, through `tarfile`."""
    try:
        with open(path, "rb") as f:
            members = plain_members(f)
            if members is not None:
                return _index_members(path, f, members)
    except FileNotFoundError:
        raise DataSourceError(f"{path}: shard not found") from None
    except OSError:
        pass  # tarfile says what is wrong, below
    return _index_with_tarfile(path)


def _index_members(path: str, f, members: list[Member]) -> tuple[list[IndexedSample], list[tuple[str, str]]]:
    samples: list[IndexedSample] = []
    problems: list[tuple[str, str]] = []
    key, images, fields = None, {}, {}
    for m in members:
        bad = _unsafe_name(m.name)
        if bad:
            problems.append((f"{path}:{m.name}", f"refused: {bad}"))
            continue
        if not m.is_file:
            continue
        k, ext = split_key(m.name)
        if k != key:
            if key is not None:
                samples.append(_sample(key, images, fields))
            key, images, fields = k, {}, {}
        if ext in IMAGE_FIELDS and m.size <= _MAX_MEMBER_BYTES:
            images[ext] = (m.offset_data, m.size)
        elif ext in _SMALL_FIELDS and m.size <= _MAX_SMALL_BYTES:
            f.seek(m.offset_data)
            fields[ext] = f.read(m.size)
    if key is not None:
        samples.append(_sample(key, images, fields))
    return samples, problems


def _sample(key: str, images: dict, fields: dict) -> IndexedSample:
    ext = next((e for e in IMAGE_FIELDS if e in images), "")
    return IndexedSample(key, images.get(ext), ext, fields)


def _index_with_tarfile(path: str) -> tuple[list[IndexedSample], list[tuple[str, str]]]:
    try:
        tf = tarfile.open(path, mode="r:")
    except FileNotFoundError:
        raise DataSourceError(f"{path}: shard not found") from None
    except (OSError, tarfile.TarError) as e:
        raise DataSourceError(f"{path}: not an uncompressed tar shard ({e}); evaluation reads "
                              "images at their offsets in plain .tar files") from None
    samples: list[IndexedSample] = []
    problems: list[tuple[str, str]] = []
    key, images, fields = None, {}, {}

    def flush():
        if key is not None:
            samples.append(_sample(key, images, fields))

    with tf:
        try:
            for member in tf:
                bad = _unsafe_name(member.name)
                if bad:
                    problems.append((f"{path}:{member.name}", f"refused: {bad}"))
                    continue
                if not member.isfile():
                    continue
                k, ext = split_key(member.name)
                if k != key:
                    flush()
                    key, images, fields = k, {}, {}
                if ext in IMAGE_FIELDS and member.size <= _MAX_MEMBER_BYTES:
                    images[ext] = (member.offset_data, member.size)
                elif ext in _SMALL_FIELDS and member.size <= _MAX_SMALL_BYTES:
                    fields[ext] = tf.extractfile(member).read()
        except (OSError, tarfile.TarError, EOFError) as e:
            problems.append((path, f"shard is damaged after {key or 'the start'} ({type(e).__name__}: {e})"))
    flush()
    return samples, problems
