"""The verified loader of hf_mtl model folders, used by every consumer: `hf-mtl predict` / `embed`, the exports, and
training that continues from a trained folder. New consumers (ONNX export, LoRA, ...) should load through it too.

A model is a folder, a Hub id (`name` or `org/name`) or a `package:` alias (an encoder installed with pip). It is
refused with one `ModelError` naming it and what is wrong, before anything is built from it, when:
- it does not exist (at once: a name that is no folder is a Hub id only if the local Hub cache has it or the Hub
  answers one request, so a typo such as `outptus/demo` is not retried on an unreachable Hub), has no `config.json`,
  that file is not JSON (`config.json:L:C`) or not an hf_mtl config;
- a weights file is missing or damaged (every tensor's header and extent is read, as a truncated copy or a kill during
  `save_pretrained` leaves them);
- the weights do not match `config.json` (a head missing, of another shape, or not declared; encoder weights of layers
  the config does not have; a task whose kind or labels differ from what `save_pretrained` recorded in the weights:
  see `MultiTaskModel.from_pretrained`, which is strict for everyone, remote code included);
- the tokenizer is missing, slow, or not the encoder's (`tokenizer_checks.check_tokenizer`: transformers builds a 5-token
  tokenizer from a folder without `tokenizer.json`, which turns every word into `[UNK]`).
"""

import os

from .configuration_mtl import MultiTaskConfig
from .errors import ModelError
from .json_files import read_json_file

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


def looks_like_a_path(name_or_path: str) -> bool:
    """A folder rather than a Hub id (`name` or `org/name`)."""
    return os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1


def check_hub_model_id(name: str, where: str) -> None:
    """
    For a name that is no local folder: return when it can be a Hub model (its files are in the local Hub cache, or
    the Hub answers one request for it); else raise a `ModelError` "no such folder" at once. A typo such as
    `outptus/demo` reads like a Hub id `org/name`, and transformers would retry an unreachable Hub for half a minute
    before saying anything.
    """
    from huggingface_hub import constants, get_session, try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return
    except ValueError:  # not a valid Hub id either (HFValidationError)
        raise ModelError(f"{where}: no such folder") from None
    try:
        # One request without retries, only to know whether the Hub can be asked; what it answers is left to the
        # download (a private repository answers 401 here, and a token there).
        get_session().head(f"{constants.ENDPOINT}/api/models/{name}", timeout=10)
    except Exception as error:  # the HTTP client's connection errors, or huggingface_hub's offline mode
        raise ModelError(
            f"{where}: no such folder, nor a Hub model in the local cache (the Hugging Face Hub cannot be reached to "
            f"look it up: {error})"
        ) from None


def check_weights_file(path) -> None:
    """Raise a `ModelError` naming `path` unless it is a safetensors file whose every tensor can be read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():
                weights.get_slice(key)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such weights file") from None
    except Exception as error:  # the safetensors error types are not public; any failure here is a damaged file
        raise ModelError(f"{path}: the weights file is damaged ({type(error).__name__}: {error})") from None


def local_file(model_dir: str, name: str):
    """Path of `name` in a folder, or in the Hub cache for a Hub id (downloaded as `from_pretrained` would); None if absent."""
    if os.path.isdir(model_dir):
        path = os.path.join(model_dir, name)
        return path if os.path.isfile(path) else None
    from transformers.utils import cached_file

    try:
        return cached_file(model_dir, name, _raise_exceptions_for_missing_entries=False)
    except OSError as error:
        raise ModelError(f"model {model_dir}: cannot be fetched from the Hugging Face Hub ({error})") from None


def packaged_model_folder(name_or_path: str, where: str) -> str:
    """The folder a `package:` alias names (`modeling_mtl.resolve_packaged_model`); anything else unchanged."""
    if not name_or_path.startswith("package:"):
        return name_or_path
    from .modeling_mtl import resolve_packaged_model

    try:
        return resolve_packaged_model(name_or_path)
    except ValueError as error:
        raise ModelError(f"{where}: {error}") from None


def verify_model_folder(model_dir) -> MultiTaskConfig:
    """The checks that need no model: the folder, its config, its weights files. Returns the folder's config."""
    model_dir = os.fspath(model_dir)
    where = f"model {model_dir}"
    model_dir = packaged_model_folder(model_dir, where)
    if os.path.isfile(os.path.expanduser(model_dir)):
        raise ModelError(f"{where}: is a file; give the model's folder")
    if not os.path.isdir(os.path.expanduser(model_dir)):
        if looks_like_a_path(model_dir):
            raise ModelError(f"{where}: no such folder")
        check_hub_model_id(model_dir, where)
    model_dir = os.path.expanduser(model_dir)
    config_file = local_file(model_dir, "config.json")
    if config_file is None:
        raise ModelError(f"{where}: no config.json, so not a saved model folder")
    config_dict = read_json_file(config_file, what="model config", error=ModelError)
    if not isinstance(config_dict, dict) or config_dict.get("model_type") != MultiTaskConfig.model_type:
        found = config_dict.get("model_type") if isinstance(config_dict, dict) else None
        raise ModelError(f"{where}: not an hf_mtl multi-task model (config.json has model_type {found!r})")
    try:
        config = MultiTaskConfig.from_pretrained(model_dir)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ModelError(f"{config_file}: not a valid hf_mtl config ({error})") from None
    if not config.tasks:
        raise ModelError(f"{config_file}: declares no tasks, so the folder has no heads to predict with")

    index_file = local_file(model_dir, WEIGHTS_INDEX_NAME)
    if index_file is not None:
        index = read_json_file(index_file, what="safetensors index", error=ModelError)
        try:
            shards = sorted(set(index["weight_map"].values()))
        except (KeyError, TypeError, AttributeError) as error:
            raise ModelError(f"{index_file}: not a valid safetensors index ({error})") from None
    else:
        shards = [WEIGHTS_NAME]
    for shard in shards:
        path = local_file(model_dir, shard)
        if path is None:
            raise ModelError(f"{where}: no {shard} (hf_mtl models keep their weights in safetensors files)")
        check_weights_file(path)
    return config


def local_name(model_dir) -> str:
    """What transformers is given for a model argument: `~` expanded, a `package:` alias resolved."""
    model_dir = os.fspath(model_dir)
    return os.path.expanduser(packaged_model_folder(model_dir, f"model {model_dir}"))


def load_multitask_model(model_dir, **kwargs):
    """`MultiTaskModel.from_pretrained` of a verified folder; its errors as one `ModelError` naming the folder."""
    from .modeling_mtl import MultiTaskModel

    verify_model_folder(model_dir)
    folder = local_name(model_dir)
    try:
        return MultiTaskModel.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, RuntimeError) as error:
        message = str(error).removeprefix(f"{folder}: ")
        raise ModelError(f"model {model_dir}: {message}") from None


def load_tokenizer(model_dir, encoder_config, **kwargs):
    """The folder's fast tokenizer, checked against the encoder (`tokenizer_checks.check_tokenizer`)."""
    from transformers import AutoTokenizer

    from .tokenizer_checks import check_tokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(local_name(model_dir), **kwargs)
    except Exception as error:  # the tokenizers library raises plain Exceptions for a damaged tokenizer.json
        raise ModelError(f"model {model_dir}: cannot load its tokenizer ({type(error).__name__}: {error})") from None
    try:
        check_tokenizer(tokenizer, encoder_config)
    except ValueError as error:
        raise ModelError(f"model {model_dir}: {error}") from None
    return tokenizer


def load_model_folder(model_dir, *, tokenizer_kwargs=None, **model_kwargs):
    """`(MultiTaskModel, fast tokenizer)` of a saved hf_mtl folder or Hub id, verified as the module docstring says."""
    model = load_multitask_model(model_dir, **model_kwargs)
    return model, load_tokenizer(model_dir, model.config.encoder, **(tokenizer_kwargs or {}))


__all__ = ["check_hub_model_id", "check_weights_file", "load_model_folder", "load_multitask_model", "load_tokenizer",
           "verify_model_folder"]
