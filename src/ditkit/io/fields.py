"""Checks of a saved model before anything is built: its config.json fields and its weights file's header.

`check_fields` checks the JSON object of one config dataclass against its fields; `build_config` builds the
config after that check; `check_weights_header` checks the tensors of a safetensors file against the shapes
and dtypes a config implies (`expected_state`), from the file's header, before any tensor is read;
`check_finite` refuses a state dict holding NaN or Inf. Every failure is a `CheckpointError` of one line
naming the file and the field::

    assets/x/config.json: config.depth must be a positive integer, got 2.5

Types follow the dataclass annotations (an ``int`` is a JSON integer, never a float or a boolean; a ``bool``
is a JSON boolean, never ``"yes"``; a ``float`` is a finite number); ranges and choices are the `Rule` s of
a table the caller passes (class name -> field -> rule), kept beside the config it checks. Unknown keys are
refused. Nothing here knows a model format: the model-folder schema is `ditkit.pipelines.schema`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import CheckpointError

__all__ = ["BOOL", "COUNT", "FINITE", "NON_NEGATIVE", "POSITIVE", "POSITIVE_INT", "PROBABILITY", "SIDE", "STRING",
           "WEIGHT_DTYPES", "Rule", "RuleTable", "build_config", "check_fields", "check_finite", "check_weights_header",
           "choice", "expected_state", "header_of", "int_list", "is_int", "is_number", "optional", "shown"]

WEIGHT_DTYPES = ("float32", "float16", "bfloat16")  # what a float model's tensors may be stored as
_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32",
                       "U64": "uint64", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """A value check: ``ok(value)`` and what a good value is, for the error line."""

    ok: Callable[[object], bool]
    need: str


RuleTable = Mapping[str, Mapping[str, Rule]]  # config class name -> field -> rule


def is_int(v) -> bool:
    """A JSON integer (never a boolean)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    """A finite JSON number (never a boolean)."""
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


POSITIVE_INT = Rule(lambda v: is_int(v) and v > 0, "a positive integer")
COUNT = Rule(lambda v: is_int(v) and v >= 0, "an integer >= 0")
POSITIVE = Rule(lambda v: is_number(v) and v > 0, "a finite number > 0")
NON_NEGATIVE = Rule(lambda v: is_number(v) and v >= 0, "a finite number >= 0")
FINITE = Rule(is_number, "a finite number")
PROBABILITY = Rule(lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)")
BOOL = Rule(lambda v: isinstance(v, bool), "true or false (a JSON boolean)")
STRING = Rule(lambda v: isinstance(v, str), "a string")
SIDE = Rule(lambda v: (is_int(v) and v > 0) or (isinstance(v, list) and len(v) == 2
                                                and all(is_int(s) and s > 0 for s in v)),
            "a positive integer or a list [height, width] of positive integers")


def choice(*names) -> Rule:
    return Rule(lambda v: isinstance(v, type(names[0])) and not isinstance(v, bool) and v in names,
                "one of " + ", ".join(repr(n) for n in names))


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.ok(v), f"null or {rule.need}")


def int_list(length: int | None = None) -> Rule:
    n = "" if length is None else f" of {length}"
    return Rule(lambda v: isinstance(v, list) and (length is None or len(v) == length) and len(v) > 0
                and all(is_int(s) and s > 0 for s in v), f"a list{n} positive integers")


_BY_TYPE = {bool: BOOL, int: Rule(is_int, "an integer"), float: FINITE, str: STRING}


def shown(value) -> str:
    """``value`` as an error line shows it: its repr, or its type for a JSON object or list; at most 60 characters."""
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


# ----------------------------------------------------------------------------- a config's fields


def _rule_of(cls: type, name: str, hint, rules: RuleTable) -> Rule | None:
    rule = rules.get(cls.__name__, {}).get(name)
    if rule is not None:
        return rule
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:  # X | None
        inner = [a for a in args if a is not type(None)]
        return optional(_BY_TYPE[inner[0]]) if len(inner) == 1 and inner[0] in _BY_TYPE else None
    return _BY_TYPE.get(hint)


def check_fields(cls: type, d, source: str | Path, prefix: str = "config.", *, rules: RuleTable) -> dict:
    """Check the JSON object ``d`` against the fields of the config dataclass ``cls`` (types by its annotations,
    ranges by ``rules``; a nested config dataclass is checked in turn); returns ``d``. CheckpointError naming
    ``source`` and the field (``prefix`` + name) for the first bad one, or an unknown key."""
    if not isinstance(d, dict):
        raise CheckpointError(f"{source}: {prefix.rstrip('.')} must be a JSON object, got {shown(d)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise CheckpointError(f"{source}: {prefix}{unknown[0]} is not a {cls.__name__} field")
    for name, value in d.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            check_fields(hint, value, source, f"{prefix}{name}.", rules=rules)
            continue
        rule = _rule_of(cls, name, hint, rules)
        if rule is not None and not rule.ok(value):
            raise CheckpointError(f"{source}: {prefix}{name} must be {rule.need}, got {shown(value)}")
    return d


def build_config(cls: type, d, source: str | Path, prefix: str = "config.", *, rules: RuleTable):
    """``cls.from_dict(d)`` after `check_fields`; a config's own consistency checks (e.g. hidden_size divisible by
    num_heads) become one CheckpointError line naming ``source``."""
    check_fields(cls, d, source, prefix, rules=rules)
    try:
        return cls.from_dict(d)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{source}: {prefix.rstrip('.')}: {e}") from None


# ----------------------------------------------------------------------------- weights against the config


def header_of(path: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """{name: (shape, dtype)} of a safetensors file, from its header only (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            out = {}
            for k in f.keys():
                sl = f.get_slice(k)
                out[k] = (tuple(sl.get_shape()), _SAFETENSORS_DTYPES.get(sl.get_dtype(), sl.get_dtype().lower()))
            return out
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"corrupt safetensors file {path}: {str(e).splitlines()[0] if str(e) else e}") from None


def expected_state(build: Callable[[], torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The state dict of the module ``build()`` makes, built on the meta device (shapes and dtypes, no memory)."""
    with torch.device("meta"):
        return build().state_dict()


def check_weights_header(path: str | Path, expected: dict[str, torch.Tensor], *, float_weights: bool = True) -> None:
    """CheckpointError unless the safetensors file ``path`` holds exactly the tensors of ``expected`` (a state dict,
    e.g. from `expected_state`) with their shapes: float tensors stored as one of `WEIGHT_DTYPES` when
    ``float_weights`` (an integer tensor is refused, never cast), else with the expected dtype exactly."""
    header = header_of(path)
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, (shape, dtype) in header.items():
        want = expected[k]
        if shape != tuple(want.shape):
            raise CheckpointError(f"{path}: {k} has shape {shape}, the config needs {tuple(want.shape)}")
        need = str(want.dtype).replace("torch.", "")
        if want.is_floating_point() and float_weights:
            if dtype not in WEIGHT_DTYPES:
                raise CheckpointError(f"{path}: {k} is stored as {dtype}; float weights must be one of "
                                      f"{', '.join(WEIGHT_DTYPES)}")
        elif dtype != need:
            raise CheckpointError(f"{path}: {k} is stored as {dtype}, the model needs {need}")


def check_finite(state: dict[str, torch.Tensor], source: str | Path) -> None:
    """CheckpointError naming the first tensor of ``state`` (read from ``source``) holding NaN or Inf."""
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{source}: {k} holds NaN or Inf values")
