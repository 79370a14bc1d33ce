"""``relevance``: caption scoring throughput (captions/s) of the relevance model with length-grouped
batches + dynamic padding (:class:`~datamodules.samplers.LengthGroupedBatchSampler` +
:class:`~datamodules.text_batches.PadCollate`, what the suite's DataModule uses) vs every batch
padded to the longest caption of the set.

Captions are random token ids with a realistic length spread (log-normal, median ~``--median``
tokens, capped at ``--max-length``, as titles + descriptions of ImageNet-Captions are: many short,
a long tail). The network is the offline default (``roberta_small``) or ``--encoder <HF name/path>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, SequentialSampler

from datamodules.samplers import LengthGroupedBatchSampler
from datamodules.text_batches import PadCollate, TokenizedTexts
from lit_modules.relevance.networks import RelevanceNet
from lit_modules.text_encoders import build_text_encoder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--captions", type=int, default=2000)
    parser.add_argument("--median", type=float, default=24.0, help="median caption length in tokens")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--encoder", default="roberta_small")
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)


@torch.no_grad()
def captions_per_second(net: torch.nn.Module, loader: DataLoader, n: int, device: torch.device) -> float:
    start = time.perf_counter()
    for batch in loader:
        net(batch["ids"].to(device), batch["mask"].to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.exp(torch.randn(args.captions, generator=g) * 0.8 + torch.log(torch.tensor(args.median)))
    lengths = lengths.round().clamp(3, args.max_length).long().tolist()
    ids = [torch.randint(5, args.vocab_size, (n,), generator=g).tolist() for n in lengths]
    texts = TokenizedTexts(ids, [0] * len(ids))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kwargs = {"max_length": args.max_length} if args.encoder == "roberta_small" else {}
    net = RelevanceNet(
        build_text_encoder(args.encoder, vocab_size=args.vocab_size, **kwargs), num_classes=1000
    )
    net = net.to(device).eval()
    collate = PadCollate(pad_id=1)
    longest = max(lengths)

    def pad_to_longest(items):  # the baseline: one global length for every batch
        batch = collate(items)
        pad = longest - batch["ids"].shape[1]
        batch["ids"] = torch.nn.functional.pad(batch["ids"], (0, pad), value=1)
        batch["mask"] = torch.nn.functional.pad(batch["mask"], (0, pad), value=False)
        return batch

    loaders = {
        "pad_to_longest": DataLoader(texts, batch_size=args.batch_size, collate_fn=pad_to_longest),
        "length_grouped": DataLoader(
            texts,
            collate_fn=collate,
            batch_sampler=LengthGroupedBatchSampler(
                SequentialSampler(texts), lengths, args.batch_size, shuffle=False
            ),
        ),
    }
    speed = {}
    for _ in range(args.repeats):  # interleaved
        for name, loader in loaders.items():
            speed.setdefault(name, []).append(captions_per_second(net, loader, len(texts), device))
    padded = {
        "pad_to_longest": len(texts) * longest,
        "length_grouped": sum(
            len(b) * max(lengths[i] for i in b) for b in loaders["length_grouped"].batch_sampler
        ),
    }
    base = statistics.median(speed["pad_to_longest"])
    rows = [
        {
            "batching": name,
            "captions_s": statistics.median(v),
            "speedup": statistics.median(v) / base,
            "padding_share_pct": 100.0 * (1 - sum(lengths) / padded[name]),
        }
        for name, v in speed.items()
    ]
    return {
        "title": f"relevance scoring, {args.captions} captions ({args.encoder})",
        "columns": ["batching", "captions_s", "speedup", "padding_share_pct"],
        "rows": rows,
        "settings": vars(args),
        "notes": [
            f"caption lengths: median {statistics.median(lengths)}, max {longest} tokens; "
            "target speedup >= 2x"
        ],
    }
