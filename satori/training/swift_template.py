"""An ms-swift plugin: the Qwen2.5-VL template with the image and video token ids of the model's own tokenizer.

ms-swift's `qwen2_5_vl` template hard-codes Qwen's ids (image 151655, video 151656), so a model must
have Qwen's 151,936-row vocabulary to train with it. The embedded default's tiny model has a compact
one (its ~1,000 BPE tokens, then Qwen's special tokens): at Qwen's size, the logits, the sampling over
them and the embedding's optimizer state cost most of a CPU training step. This template is ms-swift's
own class, every method unchanged, with only those two ids read from the tokenizer; models with Qwen's
ids (every Hub model, the rehearsal's) train with `qwen2_5_vl` itself (swift_cli.template_for).
"""

from __future__ import annotations

from swift.template import register_template
from swift.template.templates.qwen import Qwen2_5VLTemplate, QwenTemplateMeta

TOKENIZER_IDS_TEMPLATE = "satori_qwen2_5_vl"  # the name swift_cli.template_for gives ms-swift


class TokenizerIdsQwen2_5VLTemplate(Qwen2_5VLTemplate):
    def init_processor(self, processor) -> None:
        super().init_processor(processor)
        if processor is not None:
            self.image_token_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
            self.video_token_id = self.tokenizer.convert_tokens_to_ids("<|video_pad|>")


register_template(QwenTemplateMeta(TOKENIZER_IDS_TEMPLATE, template_cls=TokenizerIdsQwen2_5VLTemplate), exist_ok=True)
