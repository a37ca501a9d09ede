"""Typed run configuration: pydantic models filled from YAML, then from command-line overrides.

Unknown keys are errors (a typo must not silently fall back to a default), and every run writes the
resolved configuration next to its outputs so it can be repeated exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from shoptune.errors import ShoptuneError
from shoptune.schema import read_utf8

C = TypeVar("C", bound=BaseModel)


class StrictConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def load_config(cls: type[C], path: Path | str | None = None, overrides: dict[str, Any] | None = None) -> C:
    """YAML file (optional) overlaid with the options given on the command line (None = not given)."""
    raw: dict[str, Any] = {}
    where = "command line"
    if path is not None:
        where = str(path)
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
        raw = loaded or {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        # A nested override (lora: {rank: 8}) changes that one setting, not the whole section.
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "(config)"
        problem = "unknown setting" if first["type"] == "extra_forbidden" else first["msg"]
        raise ShoptuneError(f"{where}: setting '{field}': {problem}") from None


def dump_config(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


SPEC_RECORD = "spec.yaml"  # the resolved spec an output folder was made from, written beside what it made


def refuse_other_spec(folder: Path, spec: BaseModel, made: str) -> None:
    """A folder made from another spec is not continued or overwritten: its files would belong to neither."""
    record = folder / SPEC_RECORD
    if record.is_file() and read_utf8(record) != dump_config(spec):
        raise ShoptuneError(f"{folder} holds {made} from another spec; choose another --out or delete it")
