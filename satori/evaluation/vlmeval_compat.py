"""Importing VLMEvalKit (PyPI ms-vlmeval 0.0.19) on transformers 5.

`import vlmeval` imports ~100 model modules and sets an unverified SSL
context process-wide, so only the evaluate and download stages import it,
through this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace


def import_vlmeval():
    """vlmeval, with the transformers 5 shim applied first."""
    import transformers

    # vlmeval 0.0.19 imports AutoModelForVision2Seq, which transformers 5 removed;
    # AutoModelForImageTextToText is its replacement (same model classes).
    if not hasattr(transformers, "AutoModelForVision2Seq"):
        transformers.AutoModelForVision2Seq = transformers.AutoModelForImageTextToText
    import vlmeval

    return vlmeval


def vlmeval_api() -> SimpleNamespace:
    """The VLMEvalKit functions the pipeline uses, imported after the shim.

    Import them through here, never with a `from vlmeval ...` line in another module: an import
    sorter would move that line above the shim.
    """
    import_vlmeval()
    from vlmeval.dataset import build_dataset
    from vlmeval.dataset.utils.vqa_eval import process_line
    from vlmeval.inference import infer_data_job
    from vlmeval.smp import get_pred_file_path, load
    from vlmeval.vlm.base import BaseModel

    return SimpleNamespace(
        build_dataset=build_dataset,
        infer_data_job=infer_data_job,
        get_pred_file_path=get_pred_file_path,
        load=load,
        vqa_process_line=process_line,
        BaseModel=BaseModel,
    )


def set_data_root(data_root: Path) -> None:
    """VLMEvalKit reads TSVs from $LMUData, but only when that folder exists."""
    data_root.mkdir(parents=True, exist_ok=True)
    os.environ["LMUData"] = str(data_root.resolve())


def build_vlmeval_dataset(name: str, data_root: Path):
    """VLMEvalKit's dataset object for `name`, its TSV read from (or downloaded into) data_root."""
    set_data_root(data_root)
    dataset = vlmeval_api().build_dataset(name)
    if dataset is None:
        raise FileNotFoundError(f"VLMEvalKit could not build dataset {name!r} from {data_root / (name + '.tsv')}")
    return dataset


def official_tsv(name: str) -> tuple[str, str]:
    """(download URL, md5) VLMEvalKit holds for an official benchmark; KeyError for an unknown name."""
    vlmeval_api()
    from vlmeval.dataset import DATASET_CLASSES

    for cls in DATASET_CLASSES:
        if name in cls.supported_datasets() and name in getattr(cls, "DATASET_URL", {}):
            return cls.DATASET_URL[name], cls.DATASET_MD5.get(name, "")
    raise KeyError(f"{name!r} is not an official VLMEvalKit image benchmark with a download URL")
