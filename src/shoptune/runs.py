"""A run's folder: the one place that knows how a verb's output folder is held, what belongs in it, what made the
run in it and whether it has finished.

Every verb that writes a folder (`train`, `eval run`, `eval score`, `eval baseline`, `data build`, `data generate`,
`merge`, `combine`, `study run`) declares its `Layout` beside the code that writes the files, and goes through
`RunFolder.open`, which in this order:

1. refuses a path that is a file, or a folder this process cannot write in (one line, not a traceback later);
2. takes the folder's lock for the rest of the run (`locks.writing`): two runs never write one folder;
3. refuses a folder whose recorded identity differs from this run's: what made a run is the content of its inputs
   and their resolved paths, never their spelling (`identity`), so `a/../a/mix` and `/abs/a/mix` are one input;
4. says whether the run has finished (its `finished` file is there), so a rerun does nothing and says so;
5. refuses a folder holding anything the verb does not write (a user's files, another verb's run).

An interrupted run is continued by the same command: what it wrote is kept under the same lock and identity.
"""

from __future__ import annotations

import contextlib
import enum
import tempfile
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shoptune.errors import ShoptuneError
from shoptune.files import atomic_write_text, read_state, read_utf8, sha256_of, write_json
from shoptune.locks import writing


@dataclass(frozen=True)
class Layout:
    """What a verb writes in its folder."""

    verb: str  # as typed after `shoptune`: "train", "eval run"
    owns: frozenset[str]  # every name the verb writes at the folder's top (hidden names are temporaries); empty:
    # a folder that others write in too (a study's, whose report adds what its spec asks for), never refused
    identity: str | None  # the file recording what made the run: JSON, or YAML for a spec (`*.yaml`)
    finished: str | None = None  # written last: a folder holding it holds a finished run
    made: str = "a run made"  # what the folder holds, in a refusal: "answers given", "a mixture built"

    def __post_init__(self) -> None:
        assert {self.identity, self.finished} - {None} <= self.owns


class RunFolder:
    """One run's folder, held by this process between `open` and the end of its block."""

    def __init__(self, out: Path, layout: Layout) -> None:
        self.out, self.layout = Path(out), layout
        self.was_finished = False  # finished before this process opened it

    @classmethod
    @contextlib.contextmanager
    def open(cls, out: Path, layout: Layout, identity: Mapping[str, Any] | None = None) -> Iterator[RunFolder]:
        """Hold `out` for `layout`'s verb (see the module's docstring); `identity` is compared with the folder's
        record unless None."""
        folder = cls(out, layout)
        folder.check_writable()
        with writing(folder.out):
            if identity is not None:
                folder.refuse_other(identity)
            folder.was_finished = folder.finished()
            if not folder.was_finished and layout.owns:
                folder.refuse_foreign()
            yield folder

    def check_writable(self) -> None:
        """A file in the way, or a folder this process cannot write in, is one line now rather than a traceback
        from deep inside the run (a checkpoint, a log) later."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise ShoptuneError(f"--out {out}: exists and is not a directory")
        if out.is_dir():
            try:
                with tempfile.TemporaryFile(dir=out):
                    pass
            except OSError as exc:
                raise ShoptuneError(f"--out {out}: cannot write there ({exc.strerror})") from None

    def finished(self) -> bool:
        return self.layout.finished is not None and (self.out / self.layout.finished).exists()

    def refuse_foreign(self, owned: Collection[str] = ()) -> None:
        """A folder holding anything the verb does not write belongs to someone else (a user's files, another verb's
        run): it is refused, never written among. Hidden names are temporaries and system files, not contents."""
        if not self.out.is_dir():
            return
        owns = self.layout.owns | set(owned)
        foreign = sorted(p.name for p in self.out.iterdir() if p.name not in owns and not p.name.startswith("."))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ShoptuneError(
                f"--out {self.out}: holds {shown}, which `shoptune {self.layout.verb}` does not write; "
                "choose a new or empty folder"
            )

    def recorded(self) -> dict[str, Any] | None:
        """The identity record the folder holds, or None."""
        if self.layout.identity is None or not (self.out / self.layout.identity).is_file():
            return None
        assert self.layout.identity is not None
        path = self.out / self.layout.identity
        if path.suffix in (".yaml", ".yml"):
            import yaml

            try:
                value = yaml.safe_load(read_utf8(path))
            except yaml.YAMLError:
                value = None
            if not isinstance(value, dict):
                raise ShoptuneError(f"{path}: damaged run record; delete it (or its folder) to start over")
            return value
        return read_state(path)

    def refuse_other(self, identity: Mapping[str, Any]) -> None:
        """A folder made with other settings or data is not continued: its files would belong to neither run."""
        previous = self.recorded()
        if previous is None:
            return
        changed = differences(identity, previous)
        if changed:
            raise ShoptuneError(
                f"{self.out} holds {self.layout.made} with other settings or data ({', '.join(changed)}); "
                "choose another --out or delete that folder"
            )

    def write_record(self, record: Mapping[str, Any]) -> None:
        """The identity record (with whatever else the run keeps in it), written atomically."""
        assert self.layout.identity is not None
        path = self.out / self.layout.identity
        if path.suffix in (".yaml", ".yml"):
            import yaml

            atomic_write_text(path, yaml.safe_dump(dict(record), sort_keys=False, allow_unicode=True))
        else:
            write_json(path, dict(record))


def differences(current: Mapping[str, Any], previous: Mapping[str, Any]) -> list[str]:
    """The names that differ between two identities: a section's own settings by name (`learning_rate`), a value by
    its key (`data`)."""
    changed: list[str] = []
    for key in current:
        now, then = current[key], previous.get(key)
        if isinstance(now, Mapping) and isinstance(then, Mapping):
            changed += [name for name in sorted({*now, *then}) if now.get(name) != then.get(name)]
        elif now != then:
            changed.append(key)
    return changed


# --- what identifies a run ------------------------------------------------------------------------------------


def resolved(path: Path | str) -> str:
    """A path as the file it names: absolute, `..` and symlinks resolved; the same file gives the same text."""
    return str(Path(path).expanduser().resolve())


def content(path: Path | str | None) -> str | None:
    """An input file's identity: its SHA-256 (None where there is no such file)."""
    return sha256_of(Path(path)) if path is not None and Path(path).is_file() else None


def folder_content(path: Path | str) -> dict[str, str]:
    """A folder's identity (an adapter, say): the SHA-256 of each file at its top, by name."""
    return {file.name: sha256_of(file) for file in sorted(Path(path).iterdir()) if file.is_file()}


def source(name: str | None) -> str | None:
    """A model or adapter as given: a name shoptune knows or a hub id stays as it is, a path that exists is
    resolved (`./runs/a/adapter` and `runs/a/../a/adapter` are one adapter)."""
    if name is None:
        return None
    path = Path(name).expanduser()
    return resolved(path) if path.exists() else name


def settings(config: BaseModel, exclude: Collection[str] = (), sources: Collection[str] = ()) -> dict[str, Any]:
    """A config's settings as a run's identity: as JSON, with every path setting resolved (`resolved`), and the
    settings named in `sources` (models, adapters: strings that may be paths) by `source`."""
    dumped = config.model_dump(mode="python", exclude=set(exclude))
    out = _plain(dumped)
    for name in sources:
        if name in out:
            value = out[name]
            out[name] = [source(v) for v in value] if isinstance(value, list) else source(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return resolved(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return value
