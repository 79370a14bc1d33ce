"""Loggers shared by every model."""

from __future__ import annotations

import csv
import io

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from datamodules.files import atomic_write_text


def _write_csv_atomically(path: str, fields: list[str], rows: list[dict]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, out.getvalue())


class _ContinuingWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` (Lightning's writer deletes it) and appends to it; rewrites it
    (a new column, dropped rows) through a temporary file renamed over it, never in place: Lightning
    truncates the file and writes it again, and a kill in between lost every row logged so far."""

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            rows = list(csv.DictReader(f))
        _write_csv_atomically(self.metrics_file_path, fieldnames, rows)

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])

    def drop_rows_from(self, step: int) -> int:
        """Remove the rows logged at ``step`` or later (on disk and not yet written); returns how many."""
        self.metrics = [row for row in self.metrics if int(row.get("step", 0)) < step]
        if not self._fs.isfile(self.metrics_file_path):
            return 0
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], list(reader)
        kept = [row for row in rows if not row.get("step") or int(float(row["step"])) < step]
        if len(kept) < len(rows):
            _write_csv_atomically(self.metrics_file_path, fields, kept)
        return len(rows) - len(kept)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume: the resumed run continues the curve
    instead of starting the file again. The rows a killed attempt logged after its last checkpoint
    are dropped when the resumed attempt starts (:meth:`drop_rows_from`, called by
    :class:`lit_modules.callbacks.TrimResumedLogs`), so no step appears twice."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def drop_rows_from(self, step: int) -> None:
        self.experiment.drop_rows_from(step)
