def test_the_gpu_check_model_has_qwen2_5_vl_3b_shape():
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from benchmarks.eval_throughput import random_3b_config

    config = random_3b_config()
    assert config.image_token_id == 151655 and config.text_config.vocab_size == 151936
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    params = sum(p.numel() for p in model.parameters())
    assert 3.70e9 < params < 3.80e9  # Qwen2.5-VL-3B-Instruct: 3.75B
