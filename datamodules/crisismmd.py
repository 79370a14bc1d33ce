"""CrisisMMD v2.0 reader, compact index and DataModule (three tasks, image + tweet text + an optional
third modality).

Reads the per-task split TSVs as the publishers ship them (the real release or the synthetic twin of
:mod:`datamodules.synthetic.crisismmd`). Two file sets of the release (``release``):

* ``all`` (``crisismmd_datasplit_all.zip``): every tweet-image pair (18,082 images of 16,058 tweets),
  with the text annotators' ``label_text``, the image annotators' ``label_image`` and a ``label``
  per pair (one of the two where they differ, ``label_text_image`` = ``Negative``)::

      crisismmd_datasplit_all/task_{informative,humanitarian,damage}_text_img_{train,dev,test}.tsv

* ``agreed`` (``crisismmd_datasplit_agreed_label.zip``, the release authors' benchmark): only the pairs
  whose text and image labels agree (informative 12,708 pairs, humanitarian 8,079); it has no damage
  task, which is read from the all-data files::

      crisismmd_datasplit_agreed_label/task_{informative,humanitarian}_text_img_agreed_lab_{split}.tsv
      crisismmd_datasplit_all/task_damage_text_img_{split}.tsv

Images: ``CrisisMMD_v2.0/data_image/<event>/<D_M_YYYY>/<image_id>.jpg`` (the ``image`` column, relative).
``files`` overrides any of the three patterns (e.g. the authors' repo's ``task_damage_{split}.tsv``).
Format: UTF-8, TAB-separated, one header line, no quoting (tweets hold raw ``"``), LF or CRLF. Columns
are found by header name (case-insensitive): ``image_id`` and the label (``label``, else
``label_image``; ``label_column`` picks another, e.g. ``label_text`` of the all-data files) are
required; ``event_name``, ``tweet_id`` (else the part of ``image_id`` before its last ``_``),
``tweet_text`` and ``image`` are read when present, so the damage files with fewer columns parse too.
A row with another number of fields than the header, an unknown label, an empty id, or bytes that are
not UTF-8 raise :class:`~datamodules.errors.DatasetFormatError` with the file and line.

**Join.** Samples are (tweet, image) pairs joined across the three tasks by ``image_id`` (which holds the
tweet id). A task that does not list a sample has label ``-1`` for it: masked out of that task's loss
and metrics, never imputed. The official split of a sample is the split of the first task file that
lists it (task order informative, humanitarian, damage); a later task listing it in another split has
its label masked there (counted as ``split_conflicts``). Repeated image ids in one file keep the first
row (``duplicate_rows``; a repeat with another label is logged as a warning naming both lines). Images
missing on disk drop the sample (``missing_images``, logged). A task file without rows, or a split
left without samples, is an error.

**Index.** :meth:`CrisisMMDDataModule.prepare` (once per node) reads the files, checks that every image
exists (once, not on every rank) and writes the result as one compact ``.npz`` (fixed-width string and
integer arrays, the tweets' texts as one UTF-8 buffer with offsets: no per-sample Python objects for
loader workers to copy). The index records the settings and the size and modification time of every
TSV it was built from, and is rebuilt when any of them changes. Every rank's ``setup`` loads it.

**Splits.** ``split_mode="official"``: the release's train/dev/test. ``"random"``: the seed's 60/20/20,
drawn by tweet (all images of a tweet on one side) from a hash of ``(split_seed, tweet_id)``, so a
tweet's side never depends on which other tweets are present (a dropped image moves nothing else).

**Modalities.** ``image`` (the transforms of ``conf/augmentation``), ``text`` (token ids + mask from the
tokenizer of :mod:`lit_modules.text_encoders`: a vocabulary built from the training tweets for the
offline encoders, else the Hugging Face tokenizer) and ``extra`` (``extra_modality``: ``event``, the
event name as one id, or ``hashtags``, the tweet's hashtags as a bag of ids; vocabularies from the
training split; ``null``: none).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.base import DataInfo, DecodedImages, SuiteDataModule
from datamodules.errors import DatasetFormatError, DuplicateRows, require_rows, text_lines
from datamodules.feature_cache import FeatureCache, load_feature_cache
from datamodules.index_state import file_stamp, load_npz, npz_meta, records_match, save_npz, settings_digest
from datamodules.preprocessing.images import ImageTransforms

log = logging.getLogger(__name__)

TASKS = ("informative", "humanitarian", "damage")
SPLITS = ("train", "dev", "test")
#: The classes of each task, as the release spells them.
INFORMATIVE = ("informative", "not_informative")
HUMANITARIAN = (
    "affected_individuals",
    "infrastructure_and_utility_damage",
    "injured_or_dead_people",
    "missing_or_found_people",
    "not_humanitarian",
    "other_relevant_information",
    "rescue_volunteering_or_donation_effort",
    "vehicle_damage",
)
DAMAGE = ("little_or_no_damage", "mild_damage", "severe_damage")

LABELS: dict[str, tuple[str, ...]] = {
    "informative": INFORMATIVE,
    "humanitarian": HUMANITARIAN,
    "damage": DAMAGE,
}
NEGATIVE_CLASS = {
    "informative": "not_informative",
    "humanitarian": "not_humanitarian",
    "damage": "little_or_no_damage",
}
#: The task files of each release file set (see the module docstring), ``{split}`` in train/dev/test.
ALL_FILES = {task: f"crisismmd_datasplit_all/task_{task}_text_img_{{split}}.tsv" for task in TASKS}
AGREED_FILES = {
    "informative": "crisismmd_datasplit_agreed_label/task_informative_text_img_agreed_lab_{split}.tsv",
    "humanitarian": "crisismmd_datasplit_agreed_label/task_humanitarian_text_img_agreed_lab_{split}.tsv",
    "damage": ALL_FILES["damage"],
}
RELEASES = {"all": ALL_FILES, "agreed": AGREED_FILES}
_LABEL_COLUMNS = ("label", "label_image")
_MAX_EXAMPLES = 5
INDEX_FORMAT = "crisismmd-index"
INDEX_VERSION = 1


def task_files(release: str = "agreed", files: Mapping[str, str] | None = None) -> dict[str, str]:
    """The three tasks' file patterns: those of ``release`` (``all`` or ``agreed``), ``files`` over them."""
    if release not in RELEASES:
        raise ValueError(f"release must be one of {sorted(RELEASES)}, got {release!r}")
    unknown = set(files or {}) - set(TASKS)
    if unknown:
        raise ValueError(f"files: unknown task(s) {sorted(unknown)}; the tasks are {list(TASKS)}")
    return {**RELEASES[release], **dict(files or {})}


@dataclass
class TaskRow:
    event: str
    tweet_id: str
    image_id: str
    text: str | None
    image: str | None
    label: int
    line: int


@dataclass
class CrisisSample:
    """One (tweet, image) pair: labels in :data:`TASKS` order (-1: no label), official split."""

    event: str
    tweet_id: str
    image_id: str
    text: str
    image: str
    split: str
    labels: list[int] = field(default_factory=lambda: [-1] * len(TASKS))


@dataclass
class CrisisMMDIndex:
    samples: list[CrisisSample]
    stats: dict[str, Any]
    image_root: str


def read_task_file(path: str | Path, task: str, label_column: str | None = None) -> tuple[list[TaskRow], int]:
    """Parse one task's split TSV; returns the rows (first of repeated image ids) and the repeats count.

    ``label_column``: the column read as the label (default ``label``, else ``label_image``). Files with
    both ``label_text`` and ``label_image`` (the all-data release) log how many rows they disagree on."""
    path = Path(path)
    lines = text_lines(path, f"the {task} task's tab-separated rows")
    first = next(lines, None)
    if first is None:
        raise DatasetFormatError(path, "empty file; expected a header line", line=1)
    header = [h.strip().lower() for h in first[1].split("\t")]
    col = {name: i for i, name in enumerate(header)}
    wanted = (label_column.lower(),) if label_column else _LABEL_COLUMNS
    label_col = next((col[c] for c in wanted if c in col), None)
    if "image_id" not in col or label_col is None:
        raise DatasetFormatError(
            path, f"header {header} lacks image_id or the label column ({'/'.join(wanted)})", line=1
        )
    text_vs_image = (
        (col["label_text"], col["label_image"]) if {"label_text", "label_image"} <= set(col) else None
    )
    disagree = 0
    if "image" not in col:
        raise DatasetFormatError(path, f"header {header} lacks the image path column 'image'", line=1)
    names = LABELS[task]
    label_index = {n: i for i, n in enumerate(names)}
    rows: list[TaskRow] = []
    repeats = DuplicateRows(path)
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DatasetFormatError(
                path,
                f"expected {len(header)} tab-separated fields ({', '.join(header)}), found {len(fields)}",
                line=number,
            )
        image_id = fields[col["image_id"]].strip()
        if not image_id:
            raise DatasetFormatError(path, "empty image id", line=number, field="image_id")
        label = fields[label_col].strip()
        if label not in label_index:
            raise DatasetFormatError(
                path,
                f"unknown {task} label {label!r}; expected one of {list(names)}",
                line=number,
                field=header[label_col],
            )
        tweet_id = (
            fields[col["tweet_id"]].strip().strip('"') if "tweet_id" in col else image_id.rsplit("_", 1)[0]
        )
        if not tweet_id:
            raise DatasetFormatError(path, "empty tweet id", line=number, field="tweet_id")
        if not repeats.is_new(image_id, label, number):
            continue
        if text_vs_image and fields[text_vs_image[0]].strip() != fields[text_vs_image[1]].strip():
            disagree += 1
        rows.append(
            TaskRow(
                event=fields[col["event_name"]].strip() if "event_name" in col else "",
                tweet_id=tweet_id,
                image_id=image_id,
                text=fields[col["tweet_text"]] if "tweet_text" in col else None,
                image=fields[col["image"]].strip() or None,
                label=label_index[label],
                line=number,
            )
        )
    repeats.log(log)
    if disagree:
        log.info(
            "%s: label_text and label_image differ on %d of %d rows; read column %r",
            path,
            disagree,
            len(rows),
            header[label_col],
        )
    return rows, repeats.dropped


def read_crisismmd(
    root: str | Path,
    files: Mapping[str, str] | None = None,
    image_root: str = "CrisisMMD_v2.0",
    check_images: bool = True,
    label_column: str | None = None,
    release: str = "agreed",
) -> CrisisMMDIndex:
    """Read and join the three tasks' split files under ``root`` (see the module docstring)."""
    root = Path(root)
    patterns = task_files(release, files)
    images_dir = root / image_root
    samples: dict[str, CrisisSample] = {}
    stats: dict[str, Any] = {"rows": {}, "duplicate_rows": 0, "split_conflicts": 0, "missing_text": 0}
    for f, task in enumerate(TASKS):
        stats["rows"][task] = {}
        for split in SPLITS:
            path = root / patterns[task].format(split=split)
            rows, repeats = read_task_file(path, task, label_column)
            require_rows(rows, f"{task} {split}", path)
            stats["rows"][task][split] = len(rows)
            stats["duplicate_rows"] += repeats
            for row in rows:
                sample = samples.get(row.image_id)
                if sample is None:
                    if row.image is None:
                        raise DatasetFormatError(path, "empty image path", line=row.line, field="image")
                    sample = samples[row.image_id] = CrisisSample(
                        row.event, row.tweet_id, row.image_id, row.text or "", row.image, split
                    )
                elif sample.split != split:
                    stats["split_conflicts"] += 1
                    continue
                if not sample.text and row.text:
                    sample.text = row.text
                if not sample.event and row.event:
                    sample.event = row.event
                sample.labels[f] = row.label
    present = [not check_images or (images_dir / s.image).is_file() for s in samples.values()]
    kept = [s for s, here in zip(samples.values(), present) if here]
    missing = [s for s, here in zip(samples.values(), present) if not here]
    stats["missing_text"] = sum(not s.text for s in kept)
    stats["missing_images"] = len(missing)
    stats["missing_images_by_split"] = {s: sum(x.split == s for x in missing) for s in SPLITS}
    stats["samples"] = {s: sum(x.split == s for x in kept) for s in SPLITS}
    stats["labelled"] = {t: sum(x.labels[f] >= 0 for x in kept) for f, t in enumerate(TASKS)}
    if missing:
        log.warning(
            "CrisisMMD %s: dropped %d samples whose image is missing under %s, e.g. %s",
            root,
            len(missing),
            images_dir,
            ", ".join(s.image for s in missing[:_MAX_EXAMPLES]),
        )
    return CrisisMMDIndex(kept, stats, str(images_dir.resolve()))


def split_by_tweet(
    tweet_ids: Sequence[str] | np.ndarray, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> np.ndarray:
    """The seed's random split by tweet, as split codes (indices into :data:`SPLITS`) per sample.

    A tweet's side is a fixed function of ``(seed, tweet_id)`` (its hash as a number in [0, 1) against
    the cumulative ``fractions``), so a tweet never changes side when other tweets are added or
    dropped; the shares are the fractions up to sampling noise."""
    cuts = np.cumsum(np.asarray(fractions, dtype=float))[:2] / float(np.sum(fractions))
    unique, inverse = np.unique(np.asarray(tweet_ids, dtype=str), return_inverse=True)
    draws = np.array(
        [
            int.from_bytes(hashlib.blake2b(f"{seed}:{t}".encode(), digest_size=8).digest(), "little") / 2**64
            for t in unique
        ]
    )
    return np.searchsorted(cuts, draws, side="right").astype(np.int8)[inverse.reshape(-1)]


def random_split(
    samples: Sequence[CrisisSample], fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> dict[str, list[CrisisSample]]:
    """:func:`split_by_tweet` applied to samples: ``{split: its samples}``."""
    codes = split_by_tweet([s.tweet_id for s in samples], fractions, seed) if samples else np.zeros(0)
    return {split: [s for s, c in zip(samples, codes) if c == k] for k, split in enumerate(SPLITS)}


def hashtags(text: str) -> list[str]:
    return [w.lower() for w in text.split() if w.startswith("#") and len(w) > 1]


# ----------------------------------------------------------------------------------- compact index
@dataclass
class CrisisMMDTable:
    """The joined samples as arrays (one row per sample, in the reader's order): what ``setup`` loads.

    ``tweet_id``, ``image_id``, ``event``, ``image`` (path relative to ``image_root``) are fixed-width
    string arrays; ``split`` the official split code (index into :data:`SPLITS`); ``labels [n, T]``
    class indices (-1: no label); the texts are one UTF-8 buffer ``text_bytes`` cut at ``text_offsets``."""

    tweet_id: np.ndarray
    image_id: np.ndarray
    event: np.ndarray
    image: np.ndarray
    split: np.ndarray
    labels: np.ndarray
    text_bytes: np.ndarray
    text_offsets: np.ndarray
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.image_id)

    def texts(self, rows: Sequence[int] | np.ndarray | None = None) -> list[str]:
        rows = range(len(self)) if rows is None else rows
        data, offsets = self.text_bytes, self.text_offsets
        return [bytes(data[offsets[i] : offsets[i + 1]]).decode("utf-8") for i in rows]

    def keys(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """Feature-cache identities ``<tweet_id>/<image_id>`` of ``rows``."""
        return [f"{self.tweet_id[i]}/{self.image_id[i]}" for i in rows]

    @classmethod
    def from_index(cls, index: CrisisMMDIndex, meta: dict[str, Any]) -> CrisisMMDTable:
        s = index.samples
        encoded = [x.text.encode("utf-8") for x in s]
        return cls(
            tweet_id=np.array([x.tweet_id for x in s], dtype=str),
            image_id=np.array([x.image_id for x in s], dtype=str),
            event=np.array([x.event for x in s], dtype=str),
            image=np.array([x.image for x in s], dtype=str),
            split=np.array([SPLITS.index(x.split) for x in s], dtype=np.int8),
            labels=np.array([x.labels for x in s], dtype=np.int8).reshape(len(s), len(TASKS)),
            text_bytes=np.frombuffer(b"".join(encoded), dtype=np.uint8),
            text_offsets=np.cumsum([0, *map(len, encoded)], dtype=np.int64),
            meta={**meta, "stats": index.stats, "image_root": index.image_root},
        )


_ARRAYS = ("tweet_id", "image_id", "event", "image", "split", "labels", "text_bytes", "text_offsets")


def _source_stamps(paths: Sequence[Path]) -> dict[str, list[int] | None]:
    """``{path: [size, mtime_ns]}`` of every source file (what makes an index stale; ``None``: missing)."""
    return {str(path): file_stamp(path) for path in paths}


def build_index(
    root: str | Path, out_path: str | Path, *, settings: Mapping[str, Any], sources: Sequence[Path]
) -> CrisisMMDTable:
    """Read the release (``settings``: the arguments of :func:`read_crisismmd` but ``root``) and write
    its compact index to ``out_path`` atomically; returns the table."""
    index = read_crisismmd(root, **settings)
    meta = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "settings": dict(settings),
        "sources": _source_stamps(sources),
    }
    table = CrisisMMDTable.from_index(index, meta)
    save_npz(out_path, table.meta, {k: getattr(table, k) for k in _ARRAYS})
    return table


def load_index(path: str | Path) -> CrisisMMDTable:
    """An index written by :func:`build_index`; a damaged one raises a :class:`DatasetFormatError`."""
    path = Path(path)
    try:
        meta, arrays = load_npz(path, _ARRAYS)
    except FileNotFoundError:
        raise DatasetFormatError(path, "no CrisisMMD index here (prepare_data builds it)") from None
    except (OSError, ValueError, KeyError) as err:
        raise DatasetFormatError(path, f"damaged CrisisMMD index ({err}); delete it to rebuild") from err
    if meta.get("format") != INDEX_FORMAT:
        raise DatasetFormatError(path, f"not a CrisisMMD index (format {meta.get('format')!r})", field="meta")
    return CrisisMMDTable(**arrays, meta=meta)


# ----------------------------------------------------------------------------------- dataset
class CrisisMMDDataset(Dataset):
    """Items ``{image, text_ids, text_mask, extra_ids, labels [T] (-1: none), index}``.

    Every per-sample field is an array or a tensor (no per-sample Python objects), so DataLoader
    workers share them with the main process. With ``features`` (precomputed by frozen encoders,
    :mod:`datamodules.feature_cache`) an item carries ``<modality>_features`` instead, and images are
    not decoded when ``image`` is cached.
    """

    def __init__(
        self,
        image_root: Path,
        images: np.ndarray,
        labels: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        extra_ids: torch.Tensor | None,
        transform: Callable | None = None,
        cache_decoded: bool | float = False,
        features: dict[str, torch.Tensor] | None = None,
        deterministic_transform: bool = False,
    ) -> None:
        self.image_root, self.images = Path(image_root), np.asarray(images, dtype=str)
        self.labels = labels.long().view(len(self.images), len(TASKS))
        self.text_ids, self.text_mask, self.extra_ids = text_ids, text_mask, extra_ids
        self.transform = transform
        self.features = dict(features or {})
        self.decoder = DecodedImages(cache_decoded)
        # With caching on and a transform without randomness, keep the transformed tensor instead
        # (the transform costs as much as the training step of a small twin model), within the same
        # byte budget as the decoded pixels.
        self.transformed: dict[int, Any] | None = {} if cache_decoded and deterministic_transform else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {
            "text_ids": self.text_ids[i],
            "text_mask": self.text_mask[i],
            "labels": self.labels[i],
            "index": i,
        }
        if "image" not in self.features:
            image = self.transformed.get(i) if self.transformed is not None else None
            if image is None:
                image = self.decoder.load(i, self.image_root / str(self.images[i]))
                image = self.transform(image) if self.transform is not None else image
                if self.transformed is not None and isinstance(image, torch.Tensor):
                    if self.decoder.used + image.nbytes <= self.decoder.budget:
                        self.transformed[i] = image
                        self.decoder.used += image.nbytes
            item["image"] = image
        if self.extra_ids is not None:
            item["extra_ids"] = self.extra_ids[i]
        for modality, table in self.features.items():
            item[f"{modality}_features"] = table[i]
        return item


class CrisisMMDDataModule(SuiteDataModule):
    """CrisisMMD (real release or synthetic twin) for the multimodal multi-task models.

    Args:
        root: the release folder; release: ``all`` or ``agreed`` (see the module docstring);
        files: per-task file patterns over the release's (``{split}`` in train/dev/test);
        image_root: folder the ``image`` column is relative to (relative to ``root`` or absolute).
        index_path: the compact index (default ``<root>/crisismmd_index-<settings digest>.npz``; set it
            where ``root`` is read-only).
        check_images: drop (and count) samples whose image is missing (checked once, when indexing).
        label_column: the label column of the task files (``None``: ``label``, else ``label_image``).
        split_mode: ``official`` or ``random`` (``split_fractions``, ``split_seed``).
        transforms: an :class:`~datamodules.preprocessing.images.ImageTransforms`.
        text_encoder: the tokenizer's name (:func:`datamodules.preprocessing.text.build_tokenizer`:
            ``bilstm`` or an HF name).
        text_vocab_size, text_min_freq, text_max_length: the offline vocabulary and the token budget.
        extra_modality: ``event``, ``hashtags`` or ``None``; extra_vocab_size, max_hashtags: its ids.
        features_dir: a feature cache of frozen encoders (``python -m experiments.precompute_features``):
            batches carry ``<modality>_features`` and skip those encoders (and image decoding).
        **shared: see :class:`~datamodules.base.SuiteDataModule` (``synthetic``: the arguments of
            :func:`datamodules.synthetic.crisismmd.ensure_crisismmd`).
    """

    synthetic_writer = "datamodules.synthetic.crisismmd.ensure_crisismmd"

    def __init__(
        self,
        root: str,
        files: Mapping[str, str] | None = None,
        image_root: str = "CrisisMMD_v2.0",
        check_images: bool = True,
        label_column: str | None = None,
        split_mode: str = "official",
        split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
        transforms: ImageTransforms | None = None,
        text_encoder: str = "bilstm",
        text_vocab_size: int = 5000,
        text_min_freq: int = 1,
        text_max_length: int = 48,
        extra_modality: str | None = "event",
        extra_vocab_size: int = 64,
        max_hashtags: int = 8,
        cache_decoded: bool | float = False,
        features_dir: str | None = None,
        release: str = "agreed",
        index_path: str | None = None,
        **shared: Any,
    ) -> None:
        if split_mode not in ("official", "random"):
            raise ValueError(f"split_mode must be official or random, got {split_mode!r}")
        if extra_modality not in (None, "event", "hashtags"):
            raise ValueError(f"extra_modality must be event, hashtags or null, got {extra_modality!r}")
        self.patterns = task_files(release, files)
        super().__init__(root, **shared)
        self.transforms = transforms or ImageTransforms()
        self.table: CrisisMMDTable | None = None
        self.split_rows: dict[str, np.ndarray] = {}
        self.tokenizer = None
        self.extra_vocab = None
        self.feature_cache: FeatureCache | None = None

    # ------------------------------------------------------------------ preparation (once per node)
    def _settings(self) -> dict[str, Any]:
        hp = self.hparams
        image_root = Path(hp.image_root) if Path(hp.image_root).is_absolute() else self.root / hp.image_root
        return {
            "files": self.patterns,
            "image_root": str(image_root.resolve()),
            "check_images": bool(hp.check_images),
            "label_column": hp.label_column,
        }

    def _sources(self, splits: Sequence[str] = SPLITS) -> list[Path]:
        return [self.root / self.patterns[t].format(split=s) for t in TASKS for s in splits]

    @property
    def index_path(self) -> Path:
        if self.hparams.index_path:
            return Path(self.hparams.index_path)
        digest = settings_digest(self._settings(), length=10, algorithm="sha256")
        return self.root / f"crisismmd_index-{digest}.npz"

    def _index_is_current(self) -> bool:
        return records_match(
            npz_meta(self.index_path),
            version=INDEX_VERSION,
            settings=self._settings(),
            sources=_source_stamps(self._sources()),  # a missing file: rebuilding names it
        )

    def prepare(self) -> None:
        if self._index_is_current():
            return
        if not self.root.is_dir():
            raise DatasetFormatError(
                self.root,
                "no CrisisMMD release here: set data.root to the folder that holds crisismmd_datasplit_all/ "
                "and CrisisMMD_v2.0/ (or data.synthetic to generate the synthetic twin)",
                field="data.root",
            )
        log.info("indexing CrisisMMD %s -> %s", self.root, self.index_path)
        build_index(self.root, self.index_path, settings=self._settings(), sources=self._sources())

    # ------------------------------------------------------------------ setup (every rank)
    def _extra_tokens(self, event: str, text: str) -> list[str]:
        return [event] if self.hparams.extra_modality == "event" else hashtags(text)

    def _encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        ids, mask = self.tokenizer.encode(list(texts), self.hparams.text_max_length)
        extra = None
        if self.hparams.extra_modality:
            width = 1 if self.hparams.extra_modality == "event" else self.hparams.max_hashtags
            extra = torch.zeros(len(texts), width, dtype=torch.long)
            for i, (event, text) in enumerate(zip(self.table.event, texts)):
                row = self.extra_vocab.ids(self._extra_tokens(str(event), text))[:width]
                if row:
                    extra[i, : len(row)] = torch.as_tensor(row)
        return ids, mask, extra

    def setup(self, stage: str | None = None) -> None:
        if self.table is not None:
            return
        from datamodules.preprocessing.text import WordVocabulary, build_tokenizer

        hp = self.hparams
        self.prepare()  # returns at once when prepare_data already indexed (the usual case)
        self.table = table = load_index(self.index_path)
        codes = (
            table.split
            if hp.split_mode == "official"
            else split_by_tweet(table.tweet_id, hp.split_fractions, hp.split_seed)
        )
        self.split_rows = {split: np.flatnonzero(codes == k) for k, split in enumerate(SPLITS)}
        missing = table.meta["stats"]["missing_images_by_split"]
        for split in SPLITS:
            read_from = [split] if hp.split_mode == "official" else SPLITS
            require_rows(
                self.split_rows[split],
                split,
                *self._sources(read_from),
                dropped={"samples whose image is missing": sum(missing[s] for s in read_from)},
            )
        texts = table.texts()
        train = self.split_rows["train"]
        self.tokenizer = build_tokenizer(
            hp.text_encoder,
            [texts[i] for i in train],
            vocab_size=hp.text_vocab_size,
            min_freq=hp.text_min_freq,
        )
        if hp.extra_modality:
            self.extra_vocab = WordVocabulary.build(
                (" ".join(self._extra_tokens(str(table.event[i]), texts[i])) for i in train),
                max_size=hp.extra_vocab_size,
                tokenize=str.split,
            )
        self._encoded = self._encode(texts)
        del texts
        if hp.features_dir:
            self.feature_cache = load_feature_cache(hp.features_dir)
            log.info(
                "CrisisMMD: %s features from the cache %s (encoders not run; augmentation of those "
                "modalities off)",
                "/".join(self.feature_cache.modalities),
                hp.features_dir,
            )
        self.data_train = self.make_dataset("train", self.transforms.train())
        self.data_val = self.make_dataset("dev", self.transforms.eval())
        self.data_test = self.make_dataset("test", self.transforms.eval())
        log.info(
            "CrisisMMD (%s files, %s split): %d train / %d dev / %d test samples; %s",
            hp.release,
            hp.split_mode,
            len(self.data_train),
            len(self.data_val),
            len(self.data_test),
            table.meta["stats"],
        )

    def make_dataset(
        self, split: str, transform: Callable | None, use_cache: bool = True
    ) -> CrisisMMDDataset:
        """The dataset of one split (``train``/``dev``/``test``) with the given image transform."""
        rows = self.split_rows[split]
        features = None
        if use_cache and self.feature_cache is not None:
            keys = self.table.keys(rows)
            stored = self.feature_cache.manifest["splits"].get(split, {}).get("keys")
            # the split the cache was computed with, else the same samples split another way
            features = (
                self.feature_cache.split(split, keys) if stored == keys else self.feature_cache.by_keys(keys)
            )
        ids, mask, extra = self._encoded
        index = torch.as_tensor(rows, dtype=torch.long)
        return CrisisMMDDataset(
            Path(self.table.meta["image_root"]),
            self.table.image[rows],
            torch.as_tensor(self.table.labels[rows]),
            ids[index],
            mask[index],
            extra[index] if extra is not None else None,
            transform=transform,
            cache_decoded=self.hparams.cache_decoded,
            features=features,
            deterministic_transform=split != "train"
            or (self.transforms.hflip == 0 and self.transforms.k == 0),
        )

    def feature_datasets(self) -> dict[str, tuple[list[str], CrisisMMDDataset]]:
        """Per split: the sample keys and a dataset with evaluation transforms and no cached features,
        what :mod:`experiments.precompute_features` runs the frozen encoders over."""
        return {
            split: (
                self.table.keys(self.split_rows[split]),
                self.make_dataset(split, self.transforms.eval(), False),
            )
            for split in SPLITS
        }

    # ------------------------------------------------------------------ for the model and export
    def task_positives(self) -> dict[str, int]:
        """Training samples of each task whose label is not the task's negative class
        (:data:`NEGATIVE_CLASS`): DBN's ``m_f``."""
        labels = self.table.labels[self.split_rows["train"]]  # [n, T], -1: no label
        negative = np.array([LABELS[task].index(NEGATIVE_CLASS[task]) for task in TASKS])
        positives = ((labels >= 0) & (labels != negative)).sum(axis=0)
        return {task: int(n) for task, n in zip(TASKS, positives)}

    def info(self) -> DataInfo:
        cache = self.feature_cache
        return DataInfo(
            tasks={t: list(LABELS[t]) for t in TASKS},
            task_positives=self.task_positives(),
            num_train=len(self.split_rows["train"]),
            vocab_size=len(self.tokenizer),
            pad_id=self.tokenizer.pad_id,
            # without a third modality: the size of an empty vocabulary (padding, unknown), so that an
            # extra encoder left in the model config still builds (and is never used)
            extra_vocab_size=len(self.extra_vocab) if self.extra_vocab is not None else 2,
            image_pipeline=self.transforms.describe(),
            feature_fingerprints={m: cache.fingerprint(m) for m in cache.modalities} if cache else {},
        )

    def export_metadata(self) -> dict[str, Any]:
        return {
            "dataset": "crisismmd",
            "tasks": list(TASKS),
            "label_names": {t: list(LABELS[t]) for t in TASKS},
            "transforms": self.transforms.describe(),
            "text": {
                **(self.tokenizer.state() if self.tokenizer else {}),
                "max_length": self.hparams.text_max_length,
            },
            "extra_modality": self.hparams.extra_modality,
            "extra_vocabulary": self.extra_vocab.words if self.extra_vocab else None,
        }
