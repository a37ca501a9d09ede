"""Every YAML shipped under configs/ loads with the class that reads it, and every path in it names something
that exists; relative paths follow one rule (from the file's folder) whatever the current directory."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig

from shoptune.config import load_config
from shoptune.data.generate import GenerateSpec
from shoptune.data.spec import MixtureSpec
from shoptune.errors import ShoptuneError
from shoptune.study.spec import load_study
from shoptune.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def _mixture(path: Path) -> list[Path]:
    spec = load_config(MixtureSpec, path)
    return [spec.raw_dir, *spec.decontaminate, *spec.extra_examples]


def _study(path: Path) -> list[Path]:
    study = load_study(path)
    return [*(p for specs in study.designs.values() for p in specs), *study.eval.sets]


def _train(path: Path) -> list[Path]:
    config = load_config(TrainConfig, path)
    return [p for p in (config.mixture, config.data, config.eval_data) if p is not None]


def _generate(path: Path) -> list[Path]:
    spec = load_config(GenerateSpec, path)
    return [spec.raw_dir] if spec.raw_dir is not None else []


def _accelerate(path: Path) -> list[Path]:
    ClusterConfig.from_yaml_file(path)  # accelerate's own class: unknown keys are errors there too
    return []


# configs/<folder>/*.yaml -> what reads it, returning the paths it names
LOADERS = {"mixtures": _mixture, "studies": _study, "train": _train, "generate": _generate, "accelerate": _accelerate}
SHIPPED = sorted(CONFIGS.rglob("*.yaml"))


def test_configs_are_found():
    assert {p.parent.name for p in SHIPPED} == set(LOADERS)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_loads_with_its_class_from_any_folder(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository: relative paths must come from the file's folder
    named = LOADERS[path.parent.name](path)
    missing = [str(p) for p in named if not p.exists()]
    assert not missing, f"{path.name} names paths that do not exist: {missing}"


def test_relative_paths_come_from_the_file_also_when_the_file_is_named_relatively(tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "m.yaml").write_text("name: m\nraw_dir: raw\ndecontaminate: [/abs/dev.json, ../dev.json]\n")
    (tmp_path / "raw").mkdir()  # a folder of that name beside the current directory must not be chosen
    monkeypatch.chdir(tmp_path)
    spec = load_config(MixtureSpec, Path("specs/m.yaml"))
    assert spec.raw_dir == Path("specs/raw")
    assert spec.decontaminate == [Path("/abs/dev.json"), Path("specs/../dev.json")]
    # Overrides (the command line) are taken from the current directory, or from the base they are given with.
    assert load_config(MixtureSpec, Path("specs/m.yaml"), {"raw_dir": "raw"}).raw_dir == Path("raw")
    from_study = load_config(MixtureSpec, Path("specs/m.yaml"), {"raw_dir": "raw"}, overrides_base=Path("study"))
    assert from_study.raw_dir == Path("study/raw")


def test_paths_in_sections_lists_and_mappings_follow_the_rule(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\ndesigns: {capability: [a.yaml]}\neval: {sets: [d.json], per_task: 2}\n")
    with pytest.raises(ShoptuneError, match=r"evaluation set\(s\) not found: " + str(tmp_path / "d.json")):
        load_study(spec)
    (tmp_path / "d.json").write_text("")
    study = load_study(spec)
    assert study.designs == {"capability": [tmp_path / "a.yaml"]} and study.eval.sets == [tmp_path / "d.json"]
