"""Score every ImageNet-Captions caption with a trained relevance classifier and filter (seed 000).

Usage::

    python -m experiments.score_relevance --run logs/train/runs/relevance/<time> [--out DIR]
        [--weights export|last|<checkpoint>] [--captions FILE] [--planted FILE]
        [--min-prob 0.5] [--saturate-above 0.9] [--shift 0.1] [--normalize rank|linear]

Each caption is given alone (no class sentence) to the trained model; the rules of
:mod:`lit_modules.relevance.rules` drop or keep it and give kept ones a relevance coefficient in (0, 1].
A caption over the token budget is cut as the training items were (the run's ``data.truncate``).
The thresholds and the normalisation default to the run's (``conf/model/relevance.yaml``, kept in
``export/model.json``).

Which model scores: ``--weights export`` (default) is the run's exported network, the weights its
test ran on. The relevance experiments select the checkpoint by ``monitor: epoch`` (the last epoch),
so that is the model at the end of training, the model seed 000 scores with ("training produced a
model", after 120 epochs); a run selected on another monitor exports its best checkpoint, and
``--weights last`` scores with ``<run>/checkpoints/main/last.ckpt`` instead. The counts file says
which weights scored.

Writes into ``--out`` (default ``<run>/relevance``):

* ``kept_captions.jsonl``: one line per kept caption ``{index, filename, wnid, text, p, coef,
  coef_rank, coef_linear}`` (``coef``: the chosen normalisation; both readings alongside);
* ``relevance_counts.json``: counts per rule and per class, the weights used, and with a
  planted-noise side file (the synthetic twin's ``planted_irrelevant.json``) the filter's precision /
  recall for irrelevant captions;
* ``coefficients_hist.png``: the histogram of coefficients.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from datamodules.imagenet_captions.reader import read_imagenet_captions
from datamodules.preprocessing.text import tokenizer_from_state
from experiments.common import atomic_write_text, print_counts, write_json
from experiments.export import load_exported
from lit_modules.relevance import NORMALIZATIONS, caption_probabilities, relevance_coefficients, rule_masks

log = logging.getLogger("score_relevance")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Filter captions and give kept ones relevance coefficients.")
    parser.add_argument("--run", required=True, type=Path, help="run dir of a relevance training run")
    parser.add_argument("--out", type=Path, help="output folder (default: <run>/relevance)")
    parser.add_argument(
        "--captions", type=Path, help="captions JSON (default: the run's data.root/captions_file)"
    )
    parser.add_argument(
        "--planted",
        type=Path,
        help="side file of planted irrelevant captions (default: the "
        "twin's planted_irrelevant.json next to the captions, when there)",
    )
    parser.add_argument("--min-prob", type=float, help="rule 3 threshold (default: the run's)")
    parser.add_argument(
        "--saturate-above", type=float, help="rule 5 saturation threshold (default: the run's)"
    )
    parser.add_argument("--shift", type=float, help="rule 5 shift (default: the run's)")
    parser.add_argument(
        "--normalize", choices=NORMALIZATIONS, help="rule 5 normalisation (default: the run's)"
    )
    parser.add_argument(
        "--weights",
        default="export",
        help="export (the run's exported network), last (checkpoints/main/last.ckpt) or a checkpoint path",
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def filter_quality(dropped: torch.Tensor, planted: set[int]) -> dict[str, float]:
    """Precision and recall of "dropped" as a detector of the planted irrelevant captions, and the
    share of relevant captions kept."""
    is_planted = torch.zeros_like(dropped)
    is_planted[list(planted)] = True
    hits = int((dropped & is_planted).sum())
    relevant = int((~is_planted).sum())
    return {
        "precision": hits / max(1, int(dropped.sum())),
        "recall": hits / max(1, int(is_planted.sum())),
        "relevant_kept": int((~dropped & ~is_planted).sum()) / max(1, relevant),
    }


def plot_histogram(coef: torch.Tensor, path: Path) -> None:
    from lit_modules.figures import plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(coef.cpu().numpy(), bins=20, range=(0.0, 1.0), color="tab:blue", edgecolor="white")
    ax.set_xlabel("relevance coefficient")
    ax.set_ylabel("kept captions")
    ax.set_title(f"relevance coefficients of {len(coef)} kept captions")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_weights(net: torch.nn.Module, run: Path, weights: str) -> dict[str, Any]:
    """Put the chosen weights into the exported network; return what scored (for the counts)."""
    summary_path = run / "metrics.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    stage = next(iter(summary.get("stages", {}).values()), {})
    if weights == "export":
        return {
            "weights": "export",
            "checkpoint": stage.get("best_checkpoint"),
            "selected_by": stage.get("monitor"),
            "epochs": stage.get("epochs"),
        }
    path = run / "checkpoints" / "main" / "last.ckpt" if weights == "last" else Path(weights)
    if not path.is_file():
        raise SystemExit(f"{path}: no such checkpoint")
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    return {"weights": weights, "checkpoint": str(path)}


def score(args: argparse.Namespace) -> dict[str, Any]:
    if not (args.run / "export" / "model.json").is_file():
        raise SystemExit(f"{args.run}: no export/model.json (a training run with export=true is needed)")
    net, spec = load_exported(args.run / "export")
    scored_with = load_weights(net, args.run, args.weights)
    data_spec, model_spec = spec["data"], spec["model"]
    given = {"min_prob": args.min_prob, "saturate_above": args.saturate_above, "shift": args.shift}
    thresholds = {**model_spec["filter"], **{k: v for k, v in given.items() if v is not None}}
    captions_file = args.captions
    if captions_file is None:
        data_cfg = OmegaConf.load(args.run / "config.yaml").data
        captions_file = Path(data_cfg.root) / data_cfg.captions_file
    wnids = data_spec["label_names"]
    captions = read_imagenet_captions(captions_file, known_wnids=wnids)
    texts = [c.text(data_spec.get("with_tags", False)) for c in captions]
    tokenizer = tokenizer_from_state(data_spec["text"])
    probs = caption_probabilities(
        net,
        tokenizer,
        texts,
        activation=model_spec["activation"],
        max_length=data_spec["text"]["max_length"],
        keep_end=data_spec["text"].get("truncate", "start") == "start",
        batch_size=args.batch_size,
        device=args.device,
    )
    label = {w: i for i, w in enumerate(wnids)}
    labels = torch.as_tensor([label[c.wnid] for c in captions])
    normalize = args.normalize or model_spec.get("normalize", "rank")
    masks = rule_masks(probs, labels, min_prob=thresholds["min_prob"])
    by_reading = {
        reading: relevance_coefficients(probs, labels, **thresholds, normalize=reading)[1]
        for reading in NORMALIZATIONS
    }
    keep, coef = masks["keep"], by_reading[normalize]

    out = args.out or args.run / "relevance"
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {
                "index": c.index,
                "filename": c.filename,
                "wnid": c.wnid,
                "text": t,
                "p": round(float(p), 6),
                "coef": round(float(k), 6),
                **{f"coef_{reading}": round(float(v[row]), 6) for reading, v in by_reading.items()},
            }
        )
        for row, (c, t, p, k, kept) in enumerate(
            zip(captions, texts, masks["p"].tolist(), coef.tolist(), keep.tolist())
        )
        if kept
    ]
    atomic_write_text(out / "kept_captions.jsonl", "".join(line + "\n" for line in lines))
    per_class: dict[str, dict[str, int]] = {
        w: {"captions": 0, "dropped_below_mean": 0, "dropped_below_min_prob": 0, "kept": 0} for w in wnids
    }
    for c, below_mean, below_min, kept in zip(
        captions, masks["below_mean"].tolist(), masks["below_min_prob"].tolist(), keep.tolist()
    ):
        row = per_class[c.wnid]
        row["captions"] += 1
        row["dropped_below_mean"] += below_mean
        row["dropped_below_min_prob"] += below_min
        row["kept"] += kept
    counts: dict[str, Any] = {
        "captions": len(captions),
        "scored_with": scored_with,
        "thresholds": thresholds,
        "normalize": normalize,
        "rules": {
            "2_dropped_below_mean": int(masks["below_mean"].sum()),
            "3_dropped_below_min_prob": int(masks["below_min_prob"].sum()),
            "4_kept": int(keep.sum()),
            "5_saturated": int((masks["p"][keep] > thresholds["saturate_above"]).sum()),
        },
        "per_class": per_class,
    }
    planted_file = args.planted or captions_file.parent / "planted_irrelevant.json"
    if planted_file.is_file():
        side = json.loads(planted_file.read_text())
        planted = set(side["irrelevant"])
        counts["filter"] = {"planted_irrelevant": len(planted), **filter_quality(~keep, planted)}
        image_noise = {int(k) for k in side.get("image", {})}  # images that do not show their class
        if image_noise:
            row = {c.index: r for r, c in enumerate(captions)}
            noisy = torch.tensor([row[i] for i in sorted(image_noise) if i in row], dtype=torch.long)
            counts["filter"]["image_noise_items"] = len(noisy)
            counts["filter"]["image_noise_caption_dropped"] = float((~keep[noisy]).float().mean())
            counts["filter"]["caption_dropped_overall"] = float((~keep).float().mean())
    write_json(out / "relevance_counts.json", counts)
    plot_histogram(coef[keep], out / "coefficients_hist.png")
    counts["out"] = str(out)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return print_counts(lambda: score(args))


if __name__ == "__main__":
    sys.exit(main())
