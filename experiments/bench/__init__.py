"""Benchmarks: where the time goes, measured side by side in one process.

    python -m experiments.bench overhead     # suite training step vs a bare PyTorch loop, per model
    python -m experiments.bench pipeline     # image loading + augmentation vs bare PIL + torchvision
    python -m experiments.bench retrieval    # R@K over 5,000 x 25,000 similarities: time and peak memory
    python -m experiments.bench relevance    # caption scoring: length-grouped vs pad-to-longest
    python -m experiments.bench metrics      # metric updates as a share of the step
    python -m experiments.bench gpu          # image-CNN training throughput on a GPU, bf16 + channels_last
    python -m experiments.bench walltime     # the main job and the test suite, end to end
    python -m experiments.bench scale        # every dataset's prepare / setup / loader pass at real size

Each writes ``result.json`` (figures + the machine, versions and settings they came from) and
``result.md`` (a markdown table) into ``logs/bench/<name>/<time>/`` (``--out`` to choose). Targets
are ratios; the numbers are never asserted by tests (these machines are noisy), only that every
benchmark runs and writes its JSON.
"""
