"""An ms-swift plugin (--external_plugins, imported before any model loads): no remote code.

ms-swift's ModelLoader loads a model's config, processor and weights with trust_remote_code=True
(`ModelLoader.default_trust_remote_code`, ms-swift 4.x): whatever Python a Hub repository ships would run in
the trainer. Qwen2.5-VL is part of transformers itself, so nothing this pipeline trains needs remote code.
"""

from __future__ import annotations

from swift.model.register import ModelLoader

ModelLoader.default_trust_remote_code = False
