"""WebDataset tar shards: streaming reader, index for random access, and writer.

Layout (the WebDataset convention, so shards written by `webdataset.TarWriter`, img2dataset or
`lipkit data convert` all read here): a sample is the run of consecutive tar members sharing a
key, the member name up to the first "." of its last path component; the rest is the field:
`000042.jpg` + `000042.txt` (+ `000042.json`, `000042.cls`). The image is the first of the
IMAGE_FIELDS present; captions are the non-empty lines of `.txt`, else the `caption_field` of
`.json` (a string or a list); `.cls` holds an integer label. Text is UTF-8: a `.txt` in another
encoding makes its sample a bad one, named in the report.

Reading is streaming: shard names come from brace patterns (`train-{000..127}.tar`, several
patterns joined with "::"), shuffled per epoch when `shuffle` is set, and split over ranks ×
workers (`stream.worker_slot`) so each shard is read by one slot; with fewer shards than slots,
every slot reads every shard and keeps every n-th sample instead. Samples then pass through a
seeded shuffle buffer. The size is never needed in advance.

`lipkit.data.shard_index.index_shard` lists the samples of an uncompressed shard with the byte range of each image,
reading only headers and the small fields, so that evaluation can decode any subset later.

Safety: members are read into memory, never extracted, but a member whose name is absolute or
contains ".." is refused all the same (reported as a bad sample); images over the pixel limit
are refused before decoding; a truncated or corrupt shard is reported and skipped from the
point of damage.
"""
from __future__ import annotations

import json
import random
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from lipkit.utf8_text import NotUtf8Error, decode_utf8

from .cache import DataSourceError
from .images import DEFAULT_MAX_PIXELS, BadSampleError, open_image
from .pairs import clean_captions, sample_hash
from .stream import EpochStream, attach_skips, worker_slot
from .transforms import ImageTransform

IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff")
_MAX_MEMBER_BYTES = 256 << 20  # a single member larger than this is not an image we want


def expand_pattern(pattern: str) -> list[str]:
    """Shard names from a brace pattern; several patterns can be joined with '::'."""
    from braceexpand import braceexpand

    names = []
    for part in pattern.split("::"):
        names.extend(braceexpand(part.strip()))
    return names


def _unsafe_name(name: str) -> str | None:
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute member name"
    if ".." in p.parts or ".." in name.replace("\\", "/").split("/"):
        return "member name contains '..'"
    return None


def split_key(name: str) -> tuple[str, str]:
    """('dir/000042', 'jpg') from 'dir/000042.jpg' (the WebDataset rule: first dot of the basename)."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower()


def iter_tar_samples(path: str) -> Iterator[tuple[str, dict[str, bytes] | None, list[tuple[str, str]]]]:
    """(key, fields, problems) per sample of one shard. `fields` is None when the sample is
    unusable as a whole; problems are (where, reason) to report."""
    try:
        tf = tarfile.open(path, mode="r|*")
    except (OSError, tarfile.TarError) as e:
        yield "", None, [(path, f"cannot open shard ({e})")]
        return
    key, fields, problems = None, {}, []
    try:
        with tf:
            for member in tf:
                where = f"{path}:{member.name}"
                bad = _unsafe_name(member.name)
                if bad:
                    problems.append((where, f"refused: {bad}"))
                    continue
                if not member.isfile():
                    continue
                k, ext = split_key(member.name)
                if k != key:
                    if key is not None:
                        yield key, fields, problems
                    key, fields, problems = k, {}, []
                if member.size > _MAX_MEMBER_BYTES:
                    problems.append((where, f"member of {member.size} bytes is too large"))
                    continue
                f = tf.extractfile(member)
                fields[ext] = f.read() if f is not None else b""
    except (OSError, tarfile.TarError, EOFError) as e:
        problems.append((path, f"shard is damaged after {key or 'the start'} ({type(e).__name__}: {e})"))
        if key is not None:
            yield key, None, problems
        else:
            yield "", None, problems
        return
    if key is not None:
        yield key, fields, problems
    elif problems:
        yield "", None, problems


def decode_captions(fields: dict[str, bytes], caption_field: str, where: str = "") -> tuple[str, ...]:
    """The captions of a sample; `.txt` that is not UTF-8 raises NotUtf8Error naming `where`.txt."""
    if "txt" in fields:
        return clean_captions(decode_utf8(fields["txt"], f"{where}.txt").splitlines())
    if "json" in fields:
        try:
            obj = json.loads(decode_utf8(fields["json"], f"{where}.json"))
        except ValueError:  # NotUtf8Error included: no usable caption
            return ()
        caps = obj.get(caption_field) if isinstance(obj, dict) else None
        caps = [caps] if isinstance(caps, str) else caps if isinstance(caps, list) else []
        return clean_captions([c for c in caps if isinstance(c, str)])
    return ()


class ShardStream(EpochStream):
    """Items `{"image", "caption", "index", ["label"], ["skipped"]}` from WebDataset shards.
    `index` is the sample's position in this slot's stream (shards carry no global index)."""

    def __init__(self, pattern: str, transform: ImageTransform | None, *, seed: int = 0, shuffle: bool = True,
                 shuffle_buffer: int = 1000, caption_field: str = "caption", max_pixels: int = DEFAULT_MAX_PIXELS,
                 name: str | None = None, decode: bool = True, labels: bool = False):
        super().__init__(seed)
        self.shards = expand_pattern(pattern)
        if not self.shards:
            raise DataSourceError(f"{pattern}: the pattern names no shard")
        local = [s for s in self.shards if "://" not in s]
        missing = [s for s in local if not Path(s).is_file()]
        if missing:
            raise DataSourceError(f"{missing[0]}: shard not found ({len(missing)} of {len(self.shards)} missing)")
        self.transform, self.shuffle, self.shuffle_buffer = transform, shuffle, shuffle_buffer
        self.augment = None  # a lipkit.data.augment.TrainingAugment: extra views, caption augmentation
        self.caption_field, self.max_pixels = caption_field, max_pixels
        self.name = name or pattern
        self.decode = decode  # False: yield raw fields (for conversion), not tensors
        self.has_labels = labels  # keep ".cls" labels (-1 where a sample has none)

    def possible_captions(self) -> list[str]:
        """Every caption in the shards (one pass, no image decoding): a tokenizer corpus."""
        out = []
        for shard in self.shards:
            for _, fields, _ in iter_tar_samples(shard):
                if fields:
                    try:
                        out.extend(decode_captions(fields, self.caption_field))
                    except NotUtf8Error:  # reported as a bad sample when read
                        pass
        return out

    def _my_shards(self, epoch: int) -> tuple[list[str], int, int]:
        """(shards to read, sample stride, sample offset) for this slot."""
        slot, slots = worker_slot()
        shards = list(self.shards)
        if self.shuffle:
            random.Random(sample_hash(self.seed, epoch, 0, 7)).shuffle(shards)
        if len(shards) >= slots:
            return shards[slot::slots], 1, 0
        return shards, slots, slot

    def _samples(self, epoch: int) -> Iterator[dict]:
        shards, stride, offset = self._my_shards(epoch)
        n = 0
        for shard in shards:
            for key, fields, problems in iter_tar_samples(shard):
                if problems:
                    yield {"skipped": problems}
                if fields is None or not key:
                    continue
                n += 1
                if (n - 1) % stride != offset:
                    continue
                yield self._sample(shard, key, fields, epoch)

    def _sample(self, shard: str, key: str, fields: dict[str, bytes], epoch: int) -> dict:
        where = f"{shard}:{key}"
        ext = next((e for e in IMAGE_FIELDS if e in fields), None)
        try:
            captions = decode_captions(fields, self.caption_field, where)
        except NotUtf8Error as e:
            return {"skipped": [(e.where, e.reason)]}
        if ext is None:
            return {"skipped": [(where, "no image field (" + ", ".join(IMAGE_FIELDS) + ")")]}
        if not captions:
            return {"skipped": [(where, "empty caption")]}
        label = -1
        if "cls" in fields:
            try:
                label = int(fields["cls"].decode().strip())
            except ValueError:
                return {"skipped": [(where, "label in .cls is not an integer")]}
        if not self.decode:
            return {"key": key, "image_bytes": fields[ext], "ext": ext, "captions": captions, "label": label}
        try:
            mode = self.transform.mode if self.transform is not None else "RGB"
            img = open_image(fields[ext], name=f"{where}.{ext}", max_pixels=self.max_pixels, mode=mode)
        except BadSampleError as e:
            return {"skipped": [(e.where, e.reason)]}
        h = sample_hash(self.seed, epoch, int.from_bytes(key.encode()[-8:].rjust(8, b"\0"), "little"), 1)
        rng = random.Random(h)
        caption = captions[h % len(captions)]
        image = self.transform(img, rng if self.transform.random else None)
        out = {"image": image, "caption": caption, "captions": captions}
        if self.has_labels:
            out["label"] = label
        if self.augment is not None:  # keyed by the sample's key, as its caption choice
            self.augment.apply(out, img, epoch, int.from_bytes(key.encode()[-8:].rjust(8, b"\0"), "little"))
        return out

    def iter_epoch(self, epoch: int) -> Iterator[dict]:
        good = "image" if self.decode else "image_bytes"
        return attach_skips(self._shuffled(epoch), good_key=good)

    def _shuffled(self, epoch: int) -> Iterator[dict]:
        slot, _ = worker_slot()
        rng = random.Random(sample_hash(self.seed, epoch, slot, 8))
        buffer: list[dict] = []
        index = 0

        def emit(item):
            nonlocal index
            if self.decode:  # every caption stays with raw samples (conversion writes them all)
                item.pop("captions", None)
            item["index"] = index
            index += 1
            return item

        for sample in self._samples(epoch):
            if "image" not in sample and "image_bytes" not in sample:
                yield sample  # skip-only: attach_skips moves it onto the next item
                continue
            if not self.shuffle or self.shuffle_buffer <= 1:
                yield emit(sample)
                continue
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            j = rng.randrange(len(buffer))
            buffer[j], sample = sample, buffer[j]
            yield emit(sample)
        rng.shuffle(buffer)
        for sample in buffer:
            yield emit(sample)


def write_shards(samples, out_dir: str | Path, shard_size: int, prefix: str = "shards") -> list[Path]:
    """Write `samples` — dicts with image_bytes, ext, captions, label — as WebDataset shards
    `out_dir/prefix-000000.tar`, ... of `shard_size` samples each (webdataset.ShardWriter). Each
    shard appears under its name only once complete (written as a temp file, then renamed).
    Returns the shard paths."""
    import os

    import webdataset as wds

    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def opener(fname):
        return open(fname + ".tmp", "wb")

    def post(fname):
        os.replace(fname + ".tmp", fname)
        written.append(Path(fname))

    sink = None
    try:
        for i, s in enumerate(samples):
            if sink is None:  # opened on the first sample: no empty shard for an empty source
                sink = wds.ShardWriter(str(out_dir / f"{prefix}-%06d.tar"), maxcount=shard_size, verbose=0,
                                       opener=opener, post=post)
            sample = {"__key__": f"{i:09d}", s["ext"]: s["image_bytes"], "txt": "\n".join(s["captions"]).encode()}
            if s.get("label", -1) >= 0:
                sample["cls"] = str(int(s["label"])).encode()
            sink.write(sample)
    except BaseException:
        if sink is not None and sink.tarstream is not None:  # drop the unfinished shard
            sink.tarstream.close()
            Path(sink.fname + ".tmp").unlink(missing_ok=True)
            sink.tarstream = None
        raise
    if sink is not None:
        sink.close()
    return written


def shard_pattern(paths: Sequence[Path]) -> str:
    """A brace pattern naming `paths` as written by write_shards (consecutive numbers)."""
    if not paths:
        return ""
    first, last = paths[0].name, paths[-1].name
    prefix, a = first[: -len(".tar")].rsplit("-", 1)
    b = last[: -len(".tar")].rsplit("-", 1)[1]
    return str(paths[0].parent / (f"{prefix}-{{{a}..{b}}}.tar" if a != b else first))
