"""Prepare WordNet 3.0 for nltk, online or offline: ``python -m experiments.prepare_wordnet``.

nltk reads WordNet from ``<nltk_data>/corpora/wordnet/``. This tool fills that folder once:

* ``--source system`` (no internet): copies the Debian/Ubuntu WordNet 3.0 database files
  (``apt-get install --no-install-recommends wordnet-base wordnet-sense-index``, installed under
  ``/usr/share/wordnet``) and writes the ``lexnames`` file those packages lack (the 45
  lexicographer files of ``lexnames(5WN)``). Files are *copied*: nltk 3.10 refuses symlinks, hard
  links and paths outside its data path.
* ``--source download``: ``nltk.download("wordnet")`` into the same folder (online).
* ``--source auto`` (default): system files when they are there, else the download.

The folder is ``data/nltk_data`` under the project (``data/`` is not versioned), or ``--nltk-data``,
or the environment variable ``MMSUITE_NLTK_DATA``. :func:`load_wordnet` is what the code calls; when
WordNet is missing it raises :class:`WordNetMissing` naming the command to run.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path

from experiments.common import PROJECT_ROOT, doc_parser

log = logging.getLogger("prepare_wordnet")

ENV_VAR = "MMSUITE_NLTK_DATA"
DEFAULT_NLTK_DATA = PROJECT_ROOT / "data" / "nltk_data"
SYSTEM_DIR = Path("/usr/share/wordnet")
COMMAND = "python -m experiments.prepare_wordnet"

#: WordNet database files nltk's reader opens (``lexnames`` is generated, see :data:`LEXNAMES`).
DB_FILES = (
    "data.noun", "data.verb", "data.adj", "data.adv",
    "index.noun", "index.verb", "index.adj", "index.adv",
    "noun.exc", "verb.exc", "adj.exc", "adv.exc",
)  # fmt: skip
#: Optional files (sense keys and counts: ``lemma.count()``, ``lemma_from_key``).
OPTIONAL_FILES = ("index.sense", "cntlist.rev", "cntlist")

#: The 45 lexicographer files of WordNet 3.0 (``man 5WN lexnames``): number, name, syntactic
#: category (1 noun, 2 verb, 3 adjective, 4 adverb).
LEXNAMES: tuple[tuple[str, int], ...] = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1),
    ("noun.animal", 1), ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1),
    ("noun.cognition", 1), ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1),
    ("noun.food", 1), ("noun.group", 1), ("noun.location", 1), ("noun.motive", 1), ("noun.object", 1),
    ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1), ("noun.possession", 1),
    ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1), ("noun.shape", 1),
    ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1), ("verb.body", 2), ("verb.change", 2),
    ("verb.cognition", 2), ("verb.communication", 2), ("verb.competition", 2), ("verb.consumption", 2),
    ("verb.contact", 2), ("verb.creation", 2), ("verb.emotion", 2), ("verb.motion", 2),
    ("verb.perception", 2), ("verb.possession", 2), ("verb.social", 2), ("verb.stative", 2),
    ("verb.weather", 2), ("adj.ppl", 3),
)  # fmt: skip


class WordNetMissing(RuntimeError):
    """WordNet is not installed where the suite looks for it."""


def nltk_data_dir(path: str | Path | None = None) -> Path:
    """The nltk_data folder: ``path``, else ``$MMSUITE_NLTK_DATA``, else ``<project>/data/nltk_data``."""
    chosen = path or os.environ.get(ENV_VAR) or DEFAULT_NLTK_DATA
    return Path(chosen).expanduser().resolve()


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{cat}\n" for i, (name, cat) in enumerate(LEXNAMES))


def install_from_system(nltk_data: Path, system_dir: Path = SYSTEM_DIR) -> Path:
    """Copy the distribution's WordNet 3.0 files into ``<nltk_data>/corpora/wordnet`` (+ lexnames)."""
    missing = [f for f in DB_FILES if not (system_dir / f).is_file()]
    if missing:
        raise WordNetMissing(
            f"{system_dir} lacks {missing}; install the Debian packages first: "
            "apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index"
        )
    target = nltk_data / "corpora" / "wordnet"
    staging = target.with_name(".wordnet.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in DB_FILES + OPTIONAL_FILES:
        src = system_dir / name
        if src.is_file():
            shutil.copyfile(src.resolve(), staging / name)  # a real copy: nltk refuses links
    (staging / "lexnames").write_text(lexnames_text())
    (staging / "README").write_text(f"WordNet 3.0 copied from {system_dir} by {COMMAND}\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def install_by_download(nltk_data: Path) -> Path:
    import nltk

    nltk_data.mkdir(parents=True, exist_ok=True)
    if not nltk.download("wordnet", download_dir=str(nltk_data), quiet=True, raise_on_error=True):
        raise WordNetMissing(f"nltk.download('wordnet') into {nltk_data} failed")
    return nltk_data / "corpora" / "wordnet"


def prepare(nltk_data: str | Path | None = None, source: str = "auto", system_dir: Path = SYSTEM_DIR) -> Path:
    """Install WordNet into the nltk_data folder (see module doc); return the folder."""
    folder = nltk_data_dir(nltk_data)
    if source == "system" or (source == "auto" and (system_dir / "data.noun").is_file()):
        install_from_system(folder, system_dir)
    elif source in ("download", "auto"):
        install_by_download(folder)
    else:
        raise ValueError(f"source must be auto, system or download, got {source!r}")
    load_wordnet(folder)  # check that nltk reads it
    return folder


_CACHE: dict[Path, object] = {}


def load_wordnet(nltk_data: str | Path | None = None):
    """nltk's WordNet reader over the prepared folder; :class:`WordNetMissing` tells what to run."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    folder = nltk_data_dir(nltk_data)
    if folder in _CACHE:
        return _CACHE[folder]
    if str(folder) not in nltk.data.path:
        nltk.data.path.insert(0, str(folder))
    try:
        root = nltk.data.find("corpora/wordnet")
    except LookupError as err:
        raise WordNetMissing(
            f"WordNet is not installed in {folder}. Run `{COMMAND}` (online: nltk download; offline: "
            "`apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index` first, then "
            f"`{COMMAND} --source system`); another folder: --nltk-data or ${ENV_VAR}."
        ) from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": English only here
        reader = WordNetCorpusReader(root, None)
    _CACHE[folder] = reader
    return reader


def main(argv: list[str] | None = None) -> None:
    parser = doc_parser(__doc__)
    parser.add_argument(
        "--nltk-data", default=None, help=f"nltk_data folder (default ${ENV_VAR} or data/nltk_data)"
    )
    parser.add_argument("--source", choices=["auto", "system", "download"], default="auto")
    parser.add_argument("--system-dir", type=Path, default=SYSTEM_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        folder = prepare(args.nltk_data, args.source, args.system_dir)
    except WordNetMissing as err:
        raise SystemExit(str(err)) from err
    wn = load_wordnet(folder)
    log.info(
        "WordNet %s ready in %s (%d noun synsets)",
        wn.get_version(),
        folder,
        sum(1 for _ in wn.all_synsets("n")),
    )


if __name__ == "__main__":
    main()
