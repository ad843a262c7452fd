"""hf_mtl: multi-task transformer models (one shared encoder, named sentence and token heads) for the HF ecosystem."""

from transformers import AutoConfig, AutoModel

from .configuration_mtl import MultiTaskConfig
from .modeling_mtl import MultiTaskModel, MultiTaskOutput, MultiTaskPooling
from .pipeline_mtl import MultiTaskPipeline

__version__ = "0.1.0"

# `import hf_mtl` is enough for AutoConfig/AutoModel to load our folders without trust_remote_code; the
# register_for_auto_class calls make save_pretrained write `auto_map` and copy both .py files for everyone else.
AutoConfig.register(MultiTaskConfig.model_type, MultiTaskConfig, exist_ok=True)
AutoModel.register(MultiTaskConfig, MultiTaskModel, exist_ok=True)
MultiTaskConfig.register_for_auto_class()
MultiTaskModel.register_for_auto_class("AutoModel")

__all__ = [
    "MultiTaskConfig",
    "MultiTaskModel",
    "MultiTaskOutput",
    "MultiTaskPipeline",
    "MultiTaskPooling",
    "__version__",
]
