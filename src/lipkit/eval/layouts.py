"""Reading a labelled image set from disk, in one of three layouts:

- class folders (torchvision's ImageFolder): `root/<class>/**/<image>`, the class name is the
  folder name with `_` read as a space; an optional `<image stem>.txt` beside an image holds its
  captions, one per line; `root/train/<class>/...` and `root/test/<class>/...` give two splits;
- a table: CSV, TSV or JSON Lines with an image column, an optional label column (a class name,
  or an index) and optional caption column(s); image paths are relative to the table's folder,
  and rows naming the same image add captions to it;
- WebDataset shards in CLIP_benchmark's layout: `root/{train,test}/<n>.tar` (the shard list
  from `nshards.txt` when present), samples with an image, a `.cls` label and/or `.txt`
  captions; or shards given directly (`x.tar`, `x-{000..009}.tar`), one split.

The result is a `RawDataset`: per split, where each image is and its label and captions as
written. Class lists, prompts and label indices are `user_data`'s business. Nothing is decoded
here; a bad image is found when it is decoded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lipkit.config import EvalConfig
from lipkit.data.formats import (
    IMAGE_EXTENSIONS,
    caption_file,
    image_files,
    jsonl_objects,
    read_caption_file,
    table_rows,
)
from lipkit.data.pairs import clean_captions
from lipkit.data.shard_index import index_shard
from lipkit.data.shards import decode_captions, expand_pattern

from .errors import EvalError
from .images import ImageRef

Label = str | int  # a class name, or a class index
SPLITS = ("train", "test")


@dataclass
class RawSplit:
    refs: list[ImageRef] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)  # empty: the split has no labels
    label_where: list[str] = field(default_factory=list)  # where each label was written
    captions: list[tuple[str, ...]] = field(default_factory=list)  # per image, maybe ()
    skipped: list[tuple[str, str]] = field(default_factory=list)  # found while indexing

    def add(self, ref: ImageRef, label: Label | None, label_where: str,
            captions: tuple[str, ...]) -> None:
        self.refs.append(ref)
        if label is not None:
            self.labels.append(label)
            self.label_where.append(label_where)
        self.captions.append(captions)


@dataclass
class RawDataset:
    name: str  # the records' `dataset`
    root: Path  # where classnames.txt and zeroshot_classification_templates.txt would be
    splits: dict[str, RawSplit]  # "train" and "test", or one split


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _split_dirs(root: Path) -> dict[str, Path]:
    return {s: root / s for s in SPLITS if (root / s).is_dir()}


# ----------------------------------------------------------------------------- class folders
def _class_folders(root: Path) -> RawSplit:
    loose = next((p for p in sorted(root.iterdir()) if p.is_file()
                  and p.suffix.lower() in IMAGE_EXTENSIONS), None)
    if loose is not None:
        raise EvalError(f"{loose}: an image outside the class folders (the layout is "
                        f"{root}/<class>/<image>)")
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise EvalError(f"{root}: no class folders (the layout is {root}/<class>/<image>)")
    split = RawSplit()
    for folder in classes:
        name = folder.name.replace("_", " ")
        count = 0
        where = str(folder)
        for image in image_files(folder):
            path = str(image)
            split.add(ImageRef(path, path), name, where, _folder_captions(image))
            count += 1
        if not count:
            raise EvalError(f"{folder}: class folder has no images")
    return split


def _folder_captions(image: Path) -> tuple[str, ...]:
    try:
        return read_caption_file(caption_file(image))
    except FileNotFoundError:
        return ()
    except OSError as e:
        raise EvalError(f"{caption_file(image)}: cannot read ({e.strerror or e})") from None


# ----------------------------------------------------------------------------- tables
def _table_label(value, where: str) -> Label | None:
    """An index (a JSON integer, or a cell of digits), a class name, or None (no label field)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise EvalError(f"{where}: label {value!r} is neither a class name nor an index")
    if isinstance(value, int):
        return value
    text = value.strip()
    if not text:
        raise EvalError(f"{where}: empty label")
    return int(text) if text.isdigit() else text


def _table(path: Path, cfg: EvalConfig) -> RawSplit:
    """Rows of a CSV/TSV/JSONL file, grouped by image."""
    if path.suffix.lower() == ".jsonl":
        rows = _checked(jsonl_objects(path))
    else:
        rows = table_rows(path, [cfg.image_column])
    by_image: dict[str, int] = {}
    split = RawSplit()
    columns_seen = False
    for where, row in rows:
        if not columns_seen:
            columns_seen = True
            if cfg.label_column not in row and not any(c in row for c in cfg.caption_columns):
                raise EvalError(f"{where}: no label column {cfg.label_column!r} and no caption "
                                f"column ({', '.join(map(repr, cfg.caption_columns))}); set "
                                "eval.label_column / eval.caption_columns")
        image = row.get(cfg.image_column)
        if not isinstance(image, str) or not image.strip():
            raise EvalError(f"{where}: no image path in {cfg.image_column!r}")
        label = _table_label(row.get(cfg.label_column), where)
        captions = clean_captions([c for col in cfg.caption_columns for c in _cell_texts(row.get(col))])
        file = Path(image.strip())
        file = str(file if file.is_absolute() else path.parent / file)
        if file in by_image:  # another row for the same image: more captions
            i = by_image[file]
            if split.labels and label != split.labels[i]:
                raise EvalError(f"{where}: label {label!r} differs from the one given for "
                                f"{image.strip()} at {split.label_where[i]}")
            split.captions[i] = clean_captions(split.captions[i] + captions)
            continue
        if (label is None) != (not split.labels) and split.refs:
            raise EvalError(f"{where}: {'no' if label is None else 'a'} label, unlike the rows "
                            "before it")
        by_image[file] = len(split.refs)
        split.add(ImageRef(file, file), label, where, captions)
    if not split.refs:
        raise EvalError(f"{path}: no rows")
    return split


def _checked(objects):
    for where, obj, problem in objects:
        if obj is None:
            raise EvalError(f"{where}: {problem}")
        yield where, obj


def _cell_texts(value) -> list[str]:
    """A caption cell: a string (one caption) or, in JSON Lines, a list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


# ----------------------------------------------------------------------------- shards
def _shard_list(folder: Path) -> list[str]:
    count_file = folder / "nshards.txt"
    if count_file.is_file():  # CLIP_benchmark writes the shard count: 0.tar .. (n-1).tar
        text = count_file.read_text().strip()
        if not text.isdigit():
            raise EvalError(f"{count_file}: expected the number of shards, got {text[:40]!r}")
        shards = [str(folder / f"{i}.tar") for i in range(int(text))]
    else:
        shards = [str(p) for p in sorted(folder.glob("*.tar"), key=lambda p: _natural(p.name))]
    if not shards:
        raise EvalError(f"{folder}: empty split (no .tar shards)")
    return shards


def _shards(shards: list[str], caption_field: str) -> RawSplit:
    split = RawSplit()
    for shard in shards:
        if not Path(shard).is_file():
            raise EvalError(f"{shard}: shard not found")
        samples, problems = index_shard(shard)
        split.skipped += problems
        for s in samples:
            where = f"{shard}:{s.key}"
            if s.image is None:
                split.skipped.append((where, "no image field"))
                continue
            label = None
            if "cls" in s.fields:
                text = s.fields["cls"].decode("utf-8", errors="replace").strip()
                if not text.lstrip("-").isdigit():
                    raise EvalError(f"{where}.cls: label {text[:40]!r} is not a class index")
                label = int(text)
            if (label is None) != (not split.labels) and split.refs:
                raise EvalError(f"{where}: {'no .cls label' if label is None else 'a .cls label'}"
                                ", unlike the samples before it")
            offset, size = s.image
            split.add(ImageRef(f"{where}.{s.ext}", shard, offset, size), label, f"{where}.cls",
                      decode_captions(s.fields, caption_field))
    return split


def _has_shards(folder: Path) -> bool:
    return any(folder.glob("*.tar"))


def _one_layout(folder: Path, dirs: list[Path]) -> None:
    """An EvalError naming both when `folder` holds WebDataset shards and also `dirs` (class or
    split folders): which of the two is the dataset would be a guess."""
    shard = next(iter(sorted(folder.glob("*.tar"))), None)
    if shard is not None and dirs:
        raise EvalError(f"{folder}: two layouts in one folder, WebDataset shards ({shard.name}) and "
                        f"folders of images ({dirs[0].name}/); move one of them away")


def _check_one_layout(path: Path, splits: dict[str, Path]) -> None:
    """Shards and class folders are never mixed: at the top, within a split, or across splits."""
    def folders(folder: Path) -> list[Path]:
        return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))

    _one_layout(path, folders(path))
    for folder in splits.values():
        _one_layout(folder, folders(folder))
    sharded = [s for s, d in splits.items() if _has_shards(d)]
    foldered = [s for s, d in splits.items() if folders(d)]
    if sharded and foldered:
        raise EvalError(f"{path}: two layouts in one dataset, WebDataset shards in {sharded[0]}/ and "
                        f"class folders in {foldered[0]}/; give both splits one layout")


# ----------------------------------------------------------------------------- any layout
def _named(spec: str) -> tuple[str, str]:
    """("", spec), or (NAME, PATH) for "NAME=PATH" when spec itself names nothing on disk."""
    name, eq, path = spec.partition("=")
    if eq and name and not Path(spec).exists() and re.fullmatch(r"[\w./-]+", name):
        return name, path
    return "", spec


def _wds_name(folder: Path) -> str:
    """CLIP_benchmark's name for shards in `folder`: wds/<name>, its folders being wds_<name>."""
    name = folder.resolve().name
    return "wds/" + (name[len("wds_"):] if name.startswith("wds_") else name)


def _split(splits: dict[str, Path], read) -> dict[str, RawSplit]:
    return {s: read(folder) for s, folder in splits.items()}


def read_layout(spec: str, cfg: EvalConfig) -> RawDataset:
    """The image set `spec` names (a folder, a table, shards; "NAME=PATH" names its records)."""
    name, spec = _named(spec)
    path = Path(spec)
    caption_field = cfg.caption_columns[0] if cfg.caption_columns else "caption"
    if path.is_dir():
        dirs = _split_dirs(path)
        _check_one_layout(path, dirs)
        if any(_has_shards(d) for d in dirs.values()):
            data = RawDataset(_wds_name(path), path, _split(
                dirs, lambda d: _shards(_shard_list(d), caption_field)))
        elif _has_shards(path):
            data = RawDataset(_wds_name(path), path, {"test": _shards(_shard_list(path), caption_field)})
        elif set(dirs) == set(SPLITS):
            data = RawDataset(path.resolve().name, path, _split(dirs, _class_folders))
        elif dirs and len(dirs) == sum(1 for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")):
            # only train/ or only test/ (not a class of that name among others): the one split there is
            data = RawDataset(path.resolve().name, path, {"test": _class_folders(next(iter(dirs.values())))})
        else:
            data = RawDataset(path.resolve().name, path, {"test": _class_folders(path)})
    elif path.suffix.lower() in (".csv", ".tsv", ".jsonl") and path.is_file():
        data = RawDataset(path.stem, path.parent, {"test": _table(path, cfg)})
    elif ".tar" in spec:
        shards = expand_pattern(spec)
        folder = Path(shards[0]).parent
        data = RawDataset(_wds_name(folder), folder, {"test": _shards(shards, caption_field)})
    elif path.exists():
        raise EvalError(f"{spec}: not a dataset: expected a folder of class folders, a "
                        ".csv/.tsv/.jsonl file, or .tar shards")
    else:
        raise EvalError(f"{spec}: no such file or folder")
    data.name = name or data.name
    return data
