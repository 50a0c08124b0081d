"""An ms-swift plugin (--external_plugins, imported before any model loads): no remote code.

ms-swift 4.x loads a model's config, processor and weights with trust_remote_code=True: its ModelLoader by default
(`ModelLoader.default_trust_remote_code`), and `swift.model.model_meta._get_model_info` always (it reads the config
with `AutoConfig.from_pretrained(model_dir, trust_remote_code=True)`, and warns "Loading model ... with
trust_remote_code=True" whatever happens next). Whatever Python a Hub repository ships would run in the trainer.
Qwen2.5-VL is part of transformers itself, so nothing this pipeline trains needs remote code: both are turned off.
"""

from __future__ import annotations

from swift.model import model_meta
from swift.model.register import ModelLoader
from transformers import AutoConfig

ModelLoader.default_trust_remote_code = False


class LocalCodeAutoConfig:
    """transformers' AutoConfig for model_meta, with trust_remote_code forced off."""

    @staticmethod
    def from_pretrained(*args, **kwargs):
        return AutoConfig.from_pretrained(*args, **{**kwargs, "trust_remote_code": False})


model_meta.AutoConfig = LocalCodeAutoConfig
