"""Typed run configuration: pydantic models filled from YAML, then from command-line overrides.

Unknown keys are errors (a typo must not silently fall back to a default), relative paths follow one
rule (from the file that names them), and every run writes the resolved configuration next to its
outputs so it can be repeated exactly. Each config class lives beside the code it configures.
"""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from shoptune.errors import ShoptuneError, near
from shoptune.files import read_utf8

C = TypeVar("C", bound=BaseModel)


class StrictConfig(BaseModel):
    # A NaN or infinite number is never a setting: it would pass every bound (NaN compares false) and poison a run.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    # Names users type from habit (Hugging Face TrainingArguments, LLaMA-Factory) -> shoptune's name, or a hint
    # starting with "--" where the setting is an option of the command instead.
    habits: ClassVar[dict[str, str]] = {}


def load_config(
    cls: type[C],
    path: Path | str | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    overrides_base: Path | None = None,
) -> C:
    """A YAML file (optional) overlaid with overrides, the settings given on the command line (a nested override,
    lora: {rank: 8}, changes that one setting, not the whole section).

    The one path rule: a relative path in a file is taken from the file's folder, so a config means the same
    from any directory; a relative path in the overrides from `overrides_base`, else from the current directory.
    """
    raw: dict[str, Any] = {}
    where = "command line"
    if path is not None:
        where = str(path)
        raw = rebase(cls, _read_mapping(Path(path)), Path(path).parent)
    given = rebase(cls, overrides, overrides_base) if overrides and overrides_base is not None else overrides or {}
    for key, value in given.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        problems = [_problem(cls, error) for error in err.errors(include_url=False)]
        if len(problems) == 1:
            raise ShoptuneError(f"{where}: {problems[0]}") from None
        raise ShoptuneError(f"{where}: {len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems)) from None


def _problem(cls: type[BaseModel], error: Any) -> str:
    """One line per problem: an unknown name says what shoptune calls it, or the nearest known name."""
    loc = [str(p) for p in error["loc"]]
    field = ".".join(loc) or "(config)"
    if error["type"] != "extra_forbidden":
        return f"setting '{field}': {error['msg'].removeprefix('Value error, ')}"
    owner: Any = cls
    for part in loc[:-1]:  # the section the unknown name sits in
        inner = getattr(owner, "model_fields", {}).get(part)
        annotation = getattr(inner, "annotation", None)
        owner = next(
            (a for a in (annotation, *get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
    name = loc[-1]
    habit = getattr(owner, "habits", {}).get(name) if owner is not None else None
    if habit is not None:
        return f"setting '{field}': unknown; shoptune " + (
            f"takes it as {habit}" if habit.startswith("--") else f"calls it '{habit}'"
        )
    known = list(getattr(owner, "model_fields", {})) if owner is not None else []
    return f"setting '{field}': unknown setting{near(name, known)}"


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(read_utf8(path))
    except FileNotFoundError:
        raise ShoptuneError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ShoptuneError(f"{path}: is a folder, not a config file") from None
    except OSError as exc:
        raise ShoptuneError(f"{path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ShoptuneError(f"{path}{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ShoptuneError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    return loaded or {}


def rebase(cls: type[BaseModel], raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """`raw` (settings of `cls`, not yet validated) with every relative path setting taken from `base`, however
    deep: a path, a list or mapping of paths, a section. Values of the wrong shape are left for validation."""
    out = dict(raw)
    for name, field in cls.model_fields.items():
        if name in out:
            out[name] = _rebase_value(field.annotation, out[name], base)
    return out


def _rebase_value(annotation: Any, value: Any, base: Path) -> Any:
    if value is None:
        return None
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Path:
        if not isinstance(value, (str, Path)):
            return value
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path
    if origin in (Union, UnionType):
        for arg in args:
            if arg is not type(None) and (changed := _rebase_value(arg, value, base)) is not value:
                return changed
        return value
    if origin is list and isinstance(value, list):
        return [_rebase_value(args[0], item, base) for item in value]
    if origin is dict and isinstance(value, dict):
        return {key: _rebase_value(args[1], item, base) for key, item in value.items()}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
        return rebase(annotation, value, base)
    return value


def dump_config(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


SPEC_RECORD = "spec.yaml"  # the resolved spec an output folder was made from, written beside what it made
