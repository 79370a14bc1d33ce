"""Check a run's options before anything is built (no data generated or read, no weights fetched, no
model): a wrong type or an out-of-range value stops the run at once with the key at fault.

Two kinds of check, over the root config and every stage's config:

* **types**: every scalar value given to a ``_target_`` (data, model and its parts, optimizer,
  scheduler, trainer, callbacks, loggers) against the annotation of the parameter it fills
  (``data.batch_size=abc`` is not an ``int``; ``optimizer.lr=abc`` is not a ``float``);
* **ranges** (:data:`RANGES`): what a type does not say (``data.val_fraction`` strictly between 0
  and 1, a positive learning rate, at least one epoch ...), plus the paths a run needs: the real
  data's ``data.root`` (when ``data.synthetic`` is null), ``ckpt_path`` and ``init_ckpt`` files.
"""

from __future__ import annotations

import fnmatch
import inspect
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig


class RunOptionError(ValueError):
    """One or more run options are wrong; the message names each key."""


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: ``key pattern -> (accepts(value), what is expected)``; patterns are ``fnmatch`` globs over dotted
#: keys (``optimizer.*.lr``: a model with one optimizer per part). ``None`` values are not checked.
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (_integer, "an integer"),
    "data.batch_size": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "data.num_workers": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "data.epoch_fraction": (lambda v: _number(v) and v > 0, "a number > 0"),
    "data.val_fraction": (lambda v: _number(v) and 0 < v < 1, "a number strictly between 0 and 1"),
    "data.split_seed": (_integer, "an integer"),
    "optimizer.lr": (lambda v: _number(v) and v > 0, "a number > 0"),
    "optimizer.*.lr": (lambda v: _number(v) and v > 0, "a number > 0"),
    "optimizer.weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "optimizer.momentum": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "trainer.max_epochs": (lambda v: _integer(v) and (v >= 1 or v == -1), "an integer >= 1 (or -1)"),
    "trainer.min_epochs": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "trainer.max_steps": (lambda v: _integer(v) and (v >= 1 or v == -1), "an integer >= 1 (or -1)"),
    "trainer.num_nodes": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "trainer.devices": (
        lambda v: (_integer(v) and (v >= 1 or v == -1)) or isinstance(v, (str, list)),
        "an integer >= 1, -1 (all), 'auto' or a list of device ids",
    ),
    "trainer.log_every_n_steps": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "trainer.check_val_every_n_epoch": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "trainer.accumulate_grad_batches": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "trainer.limit_*_batches": (
        lambda v: (_integer(v) and v >= 0) or (isinstance(v, float) and 0.0 <= v <= 1.0),
        "a batch count >= 0 or a fraction in [0, 1]",
    ),
}


def check_run_options(cfg: DictConfig, stages: list[tuple[str, DictConfig]] | None = None) -> None:
    """Raise :class:`RunOptionError` listing every wrong option of ``cfg`` and of its ``stages``
    (``(name, config)`` pairs from :func:`experiments.stages.stage_configs`)."""
    root = _problems(cfg)
    problems = list(root)
    for name, stage_cfg in stages or []:
        problems += [f"stages.{name}: {p}" for p in _problems(stage_cfg) if p not in root]
    if problems:
        raise RunOptionError(
            "wrong run options (nothing was built):\n  " + "\n  ".join(dict.fromkeys(problems))
        )


def _problems(cfg: DictConfig) -> list[str]:
    plain = _resolved(cfg)
    out = []
    for group in ("data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger"):
        node = plain.get(group)
        if isinstance(node, dict):
            out += _type_problems(group, node)
    typed = {p.split("=", 1)[0] for p in out}
    for key, value in _scalars(plain):
        for pattern, (accepts, expected) in RANGES.items():
            matched = fnmatch.fnmatchcase(key, pattern) and key not in typed
            if matched and value is not None and not accepts(value):
                out.append(f"{key}={value!r}: expected {expected}")
    return out + _path_problems(plain)


def _resolved(node: DictConfig | ListConfig) -> Any:
    """``node`` as plain containers, each value resolved on its own; values that cannot be resolved yet
    (filled from the data later, ``${hydra:...}`` outside a Hydra job, ``???``) are left out."""
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    out = {}
    for key in keys:
        try:
            value = node[key]
        except Exception:
            continue
        out[key] = _resolved(value) if isinstance(value, (DictConfig, ListConfig)) else value
    return out if isinstance(node, DictConfig) else list(out.values())


def _scalars(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [kv for k, v in node.items() for kv in _scalars(v, f"{prefix}{k}.")]
    return [] if isinstance(node, list) else [(prefix[:-1], node)]


def _path_problems(plain: dict[str, Any]) -> list[str]:
    out = []
    data = plain.get("data") or {}
    if isinstance(data, dict) and data.get("synthetic") is None and "root" in data:
        root = data["root"]
        if root in (None, "", "???"):
            out.append("data.root is not set: point it at the dataset's folder (or use the synthetic twin)")
        elif not Path(str(root)).is_dir():
            out.append(
                f"data.root={root}: no such folder (the real release goes there, in its publisher's "
                "layout; the synthetic twins are the data=*_synthetic configs)"
            )
    for key in ("ckpt_path", "init_ckpt"):
        value = plain.get(key)
        if isinstance(value, str) and value not in ("last", "???") and not checkpoint_file(value).is_file():
            out.append(f"{key}={value}: no such checkpoint file")
    return out


def checkpoint_file(value: str) -> Path:
    """A checkpoint path as given in the config: relative paths are from the project root."""
    from experiments.common import PROJECT_ROOT

    path = Path(value)
    return path if path.is_absolute() else PROJECT_ROOT / path


# ------------------------------------------------------------------------------------- types
def _type_problems(prefix: str, node: dict[str, Any]) -> list[str]:
    """Scalar values of ``node`` (and of its nested ``_target_`` nodes) against the annotations of
    the parameters they fill."""
    out = []
    hints = _parameter_hints(node["_target_"]) if isinstance(node.get("_target_"), str) else {}
    for key, value in node.items():
        if str(key).startswith("_"):
            continue
        where = f"{prefix}.{key}"
        if isinstance(value, dict):
            out += _type_problems(where, value)
        elif isinstance(value, list):
            out += [
                p
                for i, v in enumerate(value)
                if isinstance(v, dict)
                for p in _type_problems(f"{where}[{i}]", v)
            ]
        elif key in hints and value is not None and value != "???":
            verdict = _accepts(hints[key], value)
            if verdict is False:
                out.append(f"{where}={value!r}: expected {_describe(hints[key])}")
    return out


def _parameter_hints(target: str) -> dict[str, Any]:
    """``{parameter: annotation}`` of what ``target`` names (a class's ``__init__`` through the classes
    it hands ``**kwargs`` to, or a function); ``{}`` when it cannot be read."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception:  # the build reports an unknown target with Hydra's own message
        return {}
    functions = [c.__init__ for c in obj.__mro__ if "__init__" in vars(c)] if inspect.isclass(obj) else [obj]
    hints: dict[str, Any] = {}
    for fn in functions:
        try:
            params = inspect.signature(fn).parameters
            annotations = typing.get_type_hints(fn)
        except Exception:
            break
        for name, param in params.items():
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and name not in hints:
                hints[name] = annotations.get(name, Any)
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return hints


_UNION_TYPES = (typing.Union, types.UnionType)


def _accepts(annotation: Any, value: Any) -> bool | None:
    """Whether a config scalar fits ``annotation``; ``None`` when the annotation cannot be judged."""
    origin = typing.get_origin(annotation)
    if origin in _UNION_TYPES:
        verdicts = [_accepts(a, value) for a in typing.get_args(annotation)]
        return True if True in verdicts else (None if None in verdicts else False)
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return _integer(value)
    if annotation is float:
        return _number(value)
    if annotation is str:
        return isinstance(value, str)
    if annotation is type(None):
        return value is None
    if inspect.isclass(annotation) and issubclass(annotation, (os.PathLike, Path)):
        return isinstance(value, str)
    if (
        inspect.isclass(annotation)
        and annotation.__module__.startswith("torch")
        and annotation.__name__ == "Tensor"
    ):
        return False  # a config value is never a tensor
    return None


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) in _UNION_TYPES:
        names = [_describe(a) for a in typing.get_args(annotation) if _describe(a) != "Tensor"]
        return " or ".join(names)
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(annotation)))
    return getattr(annotation, "__name__", str(annotation)).replace("NoneType", "null")
