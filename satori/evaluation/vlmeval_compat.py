"""Importing VLMEvalKit (PyPI ms-vlmeval 0.0.19) on transformers 5.

`import vlmeval` imports ~100 model modules and sets an unverified SSL
context process-wide, so only the evaluate and download stages import it,
through this module.
"""

from __future__ import annotations

import contextlib
import os
import sys
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

    # Its OlympiadBench helpers raise Python's limit on int digits process-wide when imported (by OlympiadBench's
    # prompts or scoring), which would change how this process parses a row holding a huge integer: import them
    # now and put the limit back.
    limit = sys.get_int_max_str_digits()
    import vlmeval.dataset.utils.olympiadbench  # noqa: F401

    sys.set_int_max_str_digits(limit)
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


def build_vlmeval_dataset(name: str, data_root: Path, scored_as: str = ""):
    """VLMEvalKit's dataset object for `name`, its TSV read from (or downloaded into) data_root. A stand-in
    (`scored_as` another benchmark's name) is that benchmark's own class, prompts and evaluate(), reading the
    stand-in's TSV as it lies (VLMEvalKit would check it against the official file's md5 and download that)."""
    set_data_root(data_root)
    if scored_as and scored_as != name:
        load = vlmeval_api().load  # the shim first
        from vlmeval.dataset import DATASET_CLASSES

        official = next(cls for cls in DATASET_CLASSES if scored_as in cls.supported_datasets())
        stand_in = type(f"StandIn{official.__name__}", (official,),
                        {"load_data": lambda self, dataset: load(str(data_root / f"{dataset}.tsv"))})  # fmt: skip
        return stand_in(name)
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


def use_latex2sympy_in_mathjudger() -> None:
    """VLMEvalKit's OlympiadBench MathJudger, its LaTeX parsed by latex2sympy2_extended.

    MathJudger parses LaTeX with sympy's parse_latex, whose ANTLR parser needs antlr4-python3-runtime 4.11; DVC's
    hydra-core, through omegaconf 2.3, pins 4.9.* (`dvc exp run -S` parses with it), so sympy's parser cannot load
    here. latex2sympy2_extended (math-verify's LaTeX parser, already installed) turns the same LaTeX into sympy
    expressions with a grammar built for antlr 4.9.3. MathJudger's own comparison rules are unchanged.
    """
    import_vlmeval()
    from latex2sympy2_extended import latex2sympy
    from vlmeval.dataset.utils import olympiadbench

    olympiadbench.parse_latex = latex2sympy


@contextlib.contextmanager
def wemath_scoring():
    """VLMEvalKit's WeMath scoring, two of its faults mended while the block runs, its numbers untouched:

    - it adds its result rows with pandas' DataFrame._append, removed in pandas 3: given back, a dict or a frame
      added as rows, as pandas 2 did;
    - its rote-memorisation rates divide by the problems mastered or memorised, zero for a model that answers no
      composite question right (the rehearsal's untrained one): ZeroDivisionError after the whole inference. The
      counts are its own; a rate over no problem is reported as 0.00% (the scores do not use these rates).
    """
    import pandas as pd

    import_vlmeval()
    from vlmeval.dataset.utils import wemath

    def append(self, other, ignore_index=False):
        return pd.concat([self, pd.DataFrame([other]) if isinstance(other, dict) else other], ignore_index=ignore_index)

    original_scores = wemath.evaluate_compute_final_scores

    def final_scores(metrics, total_count):
        try:
            return original_scores(metrics, total_count)
        except ZeroDivisionError:
            # Only the rote-memorisation rates divide by anything but total_count: where no problem is mastered or
            # memorised, one pseudo mastered row makes that rate 0 / 1; the mastery count and rate are then its own.
            empty = [kind for kind in ("loose", "strict")
                     if not any(len(metrics[f"steps{s}_filtered_rows_{n}_{kind}"]) for s in (2, 3) for n in (1, 4))]  # fmt: skip
            total_counts, rates = original_scores({**metrics, **{f"steps2_filtered_rows_4_{k}": [None] for k in empty}},
                                                  total_count)  # fmt: skip
            for kind in empty:
                total_counts[f"CompleteMastery_{kind}"] = 0
                rates[f"CompleteMastery_{kind}_rate"] = "{:.2%}".format(0)
            return total_counts, rates

    had = hasattr(pd.DataFrame, "_append")
    previous = getattr(pd.DataFrame, "_append", None)
    pd.DataFrame._append = append
    wemath.evaluate_compute_final_scores = final_scores
    try:
        yield
    finally:
        wemath.evaluate_compute_final_scores = original_scores
        if had:
            pd.DataFrame._append = previous
        else:
            del pd.DataFrame._append
