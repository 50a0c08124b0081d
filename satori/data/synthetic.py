"""Synthetic stand-ins for VQA-Verify and the benchmarks (the embedded default).

Images are a few coloured shapes on a plain background, at varied sizes and
aspect ratios. Every question has an exact answer and every relevant shape an
exact box in original pixels, so rewards and accuracies are meaningful.
Everything is a pure function of the seed.
"""

from __future__ import annotations

import base64
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from satori.core.config import OLYMPIAD_SOURCES
from satori.core.prompt import SATORI_INSTRUCTION, mcq_question

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 50, 170),
    "orange": (245, 130, 20),
}
SHAPES = ("circle", "square", "triangle")
# (width, height) pairs: square, landscape, portrait and extreme aspect ratios.
IMAGE_SIZES = ((224, 224), (320, 240), (240, 320), (448, 224), (224, 448), (280, 168), (392, 294), (168, 336))
BACKGROUND = (245, 245, 245)
OPTION_LETTERS = "ABCD"

# The learning task (`task: color_cue`, the learn profile): one large shape whose colour alone decides
# the answer, the options always these four in this order, every image the same size. The 5M model can
# learn colour -> letter and copy the caption's and the box's shape in CPU minutes; it cannot learn in
# that time to read the options and match their words, which the shapes task and MMBench's rotations ask.
TASKS = ("shapes", "color_cue")
CUE_COLORS = ("red", "green", "blue", "yellow")
CUE_SIZE = (112, 112)
CUE_QUESTION = "What color is the shape?"
ABSTAIN_ANSWER = "?"  # a warm-up's "I do not know": no option's letter, so it scores nothing and names no letter


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in original pixels

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    shapes: tuple[Shape, ...]

    def caption(self) -> str:
        names = [f"{'an' if s.color[0] in 'aeiou' else 'a'} {s.name}" for s in self.shapes]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return f"{listed[0].upper()}{listed[1:]} on a light gray background."

    def render(self) -> Image.Image:
        image = Image.new("RGB", (self.width, self.height), BACKGROUND)
        draw = ImageDraw.Draw(image)
        for shape in self.shapes:
            x1, y1, x2, y2 = shape.box
            fill = COLORS[shape.color]
            if shape.kind == "circle":
                draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill)
            elif shape.kind == "square":
                draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill)
            else:
                draw.polygon([((x1 + x2) // 2, y1), (x1, y2 - 1), (x2 - 1, y2 - 1)], fill=fill)
        return image


def random_scene(rng: random.Random) -> Scene:
    """2-3 shapes of distinct kinds and colours, placed without overlap."""
    width, height = rng.choice(IMAGE_SIZES)
    count = rng.choice((2, 3))
    kinds = rng.sample(SHAPES, count)
    colors = rng.sample(sorted(COLORS), count)
    boxes: list[tuple[int, int, int, int]] = []
    while len(boxes) < count:
        side = rng.randint(min(width, height) // 6, min(width, height) // 3)
        x1, y1 = rng.randint(0, width - side), rng.randint(0, height - side)
        candidate = (x1, y1, x1 + side, y1 + side)
        if all(_disjoint(candidate, other) for other in boxes):
            boxes.append(candidate)
    shapes = tuple(Shape(k, c, b) for k, c, b in zip(kinds, colors, boxes))
    return Scene(width, height, shapes)


def cue_scene(rng: random.Random) -> Scene:
    """One shape covering 40-70% of a CUE_SIZE image, in one of CUE_COLORS."""
    width, height = CUE_SIZE
    side = rng.randint(round(0.63 * width), round(0.84 * width))
    x1, y1 = rng.randint(0, width - side), rng.randint(0, height - side)
    shape = Shape(rng.choice(SHAPES), rng.choice(CUE_COLORS), (x1, y1, x1 + side, y1 + side))
    return Scene(width, height, (shape,))


def cue_letter(scene: Scene) -> str:
    """The answer to CUE_QUESTION: the letter of the shape's colour among CUE_COLORS."""
    return OPTION_LETTERS[CUE_COLORS.index(scene.shapes[0].color)]


def _disjoint(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def _options(rng: random.Random, correct: str, pool: list[str]) -> tuple[list[str], str]:
    """Four options including `correct`, shuffled; returns them and the correct letter."""
    others = rng.sample([p for p in pool if p != correct], len(OPTION_LETTERS) - 1)
    options = [correct, *others]
    rng.shuffle(options)
    return options, OPTION_LETTERS[options.index(correct)]


def vqa_item(rng: random.Random, scene: Scene) -> dict:
    """One VQA-Verify-shaped question about the scene: question, accepted answers, boxes."""
    target = rng.choice(scene.shapes)
    kind = rng.choice(("color", "count", "choice"))
    if kind == "color":
        question = f"What color is the {target.kind}?"
        answers, boxes = [target.color, target.color.capitalize()], [target.box]
    elif kind == "count":
        question = "How many shapes are in the image? Answer with a number."
        answers, boxes = [str(len(scene.shapes))], [s.box for s in scene.shapes]
    else:
        options, letter = _options(rng, target.kind, [*SHAPES, "star", "hexagon"])
        listed = "\n".join(f"{letter_}. {option}" for letter_, option in zip(OPTION_LETTERS, options))
        question = f"Which shape is {target.color}?\n{listed}\nAnswer with the option's letter."
        answers, boxes = [letter, f"{letter}. {target.kind}"], [target.box]
    return {"question": question, "answers": answers, "bboxs": [list(b) for b in boxes]}


def cue_item(scene: Scene) -> dict:
    """The color_cue question, laid out as the benchmarks lay it out (VLMEvalKit's prompt and the SATORI
    instruction), so that what training rewards is what the benchmarks ask."""
    letter, color = cue_letter(scene), scene.shapes[0].color
    question = mcq_question(CUE_QUESTION, list(CUE_COLORS)) + SATORI_INSTRUCTION
    # The option's letter or its text, as VLMEvalKit's MCQ matching accepts either.
    return {"question": question, "answers": [letter, f"{letter}. {color}", color], "bboxs": [list(scene.shapes[0].box)]}


def write_vqa_dataset(out_dir: Path, *, rows: int, seed: int, task: str = "shapes") -> Path:
    """Write `rows` VQA-Verify-shaped rows of `task`: images/*.png plus data.jsonl. Returns the jsonl path."""
    rng = random.Random(seed)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "data.jsonl"
    with table.open("w", encoding="utf-8") as f:
        for i in range(rows):
            if task == "color_cue":
                scene = cue_scene(rng)
                item = cue_item(scene)
            else:
                scene = random_scene(rng)
                item = vqa_item(rng, scene)
            rel_path = f"images/{i:06d}.png"
            scene.render().save(out_dir / rel_path)
            row = {
                "id": f"synthetic-{i:06d}",
                "image": rel_path,
                "question": item["question"],
                "answer": item["answers"],
                "caption": scene.caption(),
                "bbox": item["bboxs"],
                "width": scene.width,
                "height": scene.height,
                "source": f"synthetic-{task}",
            }
            f.write(json.dumps(row) + "\n")
    return table


def _b64_png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def benchmark_rows(
    *, questions: int, seed: int, circular: bool, category_column: str, task: str = "shapes"
) -> list[dict]:
    """MCQ rows in VLMEvalKit's TSV columns; `circular` adds MMBench's rotated copies.

    MMBench stores each question once per rotation of its options: copy k has
    index + k * 1e6 and the options shifted by k, and scoring credits a question
    only when every copy is answered right (VLMEvalKit's circular evaluation).
    The color_cue task keeps its options in one order (the colour decides the
    letter), so it has no rotated copies.
    """
    rng = random.Random(seed)
    rows: list[dict] = []
    rotations = range(len(OPTION_LETTERS)) if circular and task != "color_cue" else range(1)
    for i in range(questions):
        if task == "color_cue":
            scene = cue_scene(rng)
            question, options, letter = CUE_QUESTION, list(CUE_COLORS), cue_letter(scene)
            category, l2 = "color_recognition", "perception"
        else:
            scene = random_scene(rng)
            question, options, letter, category, l2 = _shapes_question(rng, scene)
        image = _b64_png(scene.render())
        for k in rotations:
            rotated = options[k:] + options[:k]
            answer = OPTION_LETTERS[rotated.index(options[OPTION_LETTERS.index(letter)])]
            row = {
                "index": i + k * 1_000_000,
                "question": question,
                "hint": "",
                **dict(zip(OPTION_LETTERS, rotated)),
                "answer": answer,
                "category": category,
                category_column: l2,
                "split": "dev",
                "image": image,
            }
            rows.append(row)
    return rows


def free_form_rows(*, questions: int, seed: int) -> list[dict]:
    """Free-form (VQA-type) rows in VLMEvalKit's TSV columns, no options: a shape's colour or how many shapes
    there are, the answer one word or number (scored by exact match, see satori.evaluation.scoring.FREE_FORM_RULE)."""
    rng = random.Random(seed)
    rows = []
    for i in range(questions):
        scene = random_scene(rng)
        target = rng.choice(scene.shapes)
        if rng.random() < 0.5:
            question, answer, category = f"What color is the {target.kind}? Answer with one word.", target.color, "color"
        else:
            question, answer, category = "How many shapes are in the image? Answer with a number.", str(len(scene.shapes)), "count"
        rows.append({"index": i, "question": question, "answer": answer, "category": category,
                     "image": _b64_png(scene.render())})  # fmt: skip
    return rows


# WeMath's knowledge concepts the stand-in's steps name: the last part of a node of VLMEvalKit's knowledge tree.
WEMATH_CONCEPTS = ("Understanding Length (Using a Ruler)", "Understanding Angles (Using a Protractor)")


def olympiad_rows(*, questions: int, seed: int) -> list[dict]:
    """An OlympiadBench stand-in in its TSV columns (the ones VLMEvalKit's OlympiadBench reads): a numerical
    question (how many shapes), `final_answer` as OlympiadBench writes it (`['3']`), the sources in turn."""
    rng = random.Random(seed)
    rows = []
    for i in range(questions):
        scene = random_scene(rng)
        rows.append({"index": i, "question": "How many shapes are in the image?", "final_answer": f"['{len(scene.shapes)}']",
                     "answer_type": "Numerical", "unit": "", "is_multiple_answer": False, "error": "",
                     "source": OLYMPIAD_SOURCES[i % len(OLYMPIAD_SOURCES)], "image": _b64_png(scene.render())})  # fmt: skip
    return rows


def wemath_rows(*, problems: int, seed: int) -> list[dict]:
    """A WeMath stand-in in its TSV columns: each problem a two-step one (rows `2steps_1`, `2steps_2`,
    `2steps_multi`) or, in turn, a three-step one, its rows sharing an `ID`, each step a shapes question with its
    `knowledge concept`, the `multi` row asking the steps at once (as WeMath's composite question does)."""
    rng = random.Random(seed)
    rows = []
    for problem in range(problems):
        steps = 2 + problem % 2
        for key in [*(f"{steps}steps_{k}" for k in range(1, steps + 1)), f"{steps}steps_multi"]:
            scene = random_scene(rng)
            question, options, letter, _, _ = _shapes_question(rng, scene)
            rows.append({"index": len(rows), "ID": f"{steps}steps-{problem}", "key": key,
                         "knowledge concept": rng.choice(WEMATH_CONCEPTS), "question": question,
                         **dict(zip(OPTION_LETTERS, options)), "answer": letter, "image": _b64_png(scene.render())})  # fmt: skip
    return rows


def _judged_question(rng: random.Random, scene: Scene, i: int) -> tuple[str, list[str], str]:
    """A judged stand-in's question, multiple-choice (even i: a colour, its options) or free-form (how many shapes):
    (question, options (none for free-form), the answer: the correct option's text, or the count)."""
    if i % 2 == 0:
        question, options, letter, _, _ = _shapes_question(rng, scene)
        return question, options, options[OPTION_LETTERS.index(letter)]
    return "How many shapes are in the image?", [], str(len(scene.shapes))


def _lettered_question(rng: random.Random, scene: Scene, i: int) -> tuple[str, list[str], str]:
    """_judged_question as MATH-Vision and MathVerse write one: the options in the question, the answer a letter."""
    question, options, answer = _judged_question(rng, scene, i)
    if options:
        return f"{question}\nChoices:\n{_choices_text(options)}", options, OPTION_LETTERS[options.index(answer)]
    return question, options, answer


def _choices_text(options: list[str]) -> str:
    return "\n".join(f"({letter}) {option}" for letter, option in zip(OPTION_LETTERS, options))


def mathvista_rows(*, questions: int, seed: int) -> list[dict]:
    """A MathVista stand-in in MathVista_MINI's TSV columns (the ones VLMEvalKit's MathVista reads): question_type
    multi_choice (its `choices` a Python list, `answer` the option's text, `answer_option` its letter) or free_form
    (answer_type integer), the question with its hint and choices as MathVista writes them, a task and skills."""
    rng = random.Random(seed)
    rows = []
    for i in range(questions):
        scene = random_scene(rng)
        question, options, answer = _judged_question(rng, scene, i)
        if options:
            hint = "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end."
            text, kind = f"{hint}\nQuestion: {question}\nChoices:\n{_choices_text(options)}", "multi_choice"
            letter, answer_type, task = OPTION_LETTERS[options.index(answer)], "text", "figure question answering"
        else:
            hint = "Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end."
            text, kind, letter, answer_type, task = f"{hint}\nQuestion: {question}", "free_form", "", "integer", "math word problem"
        rows.append({"index": i, "question": text, "answer": answer, "question_type": kind, "answer_type": answer_type,
                     "choices": repr(options) if options else "None", "answer_option": letter, "precision": "",
                     "unit": "", "task": task, "skills": repr(["numeric commonsense" if not options else "logical reasoning"]),
                     "image": _b64_png(scene.render())})  # fmt: skip
    return rows


MATHVISION_SUBJECTS = ("descriptive geometry", "counting")  # MATH-Vision's, for a colour and a count question


def mathvision_rows(*, questions: int, seed: int) -> list[dict]:
    """A MATH-Vision stand-in in MathVision's TSV columns: `choices` a Python list (empty for a free-form question),
    `answer` the option's letter or the value, the question with its options as MATH-Vision writes them, a subject
    (`category`, what its table is split by) and a level."""
    rng = random.Random(seed)
    rows = []
    for i in range(questions):
        scene = random_scene(rng)
        question, options, answer = _lettered_question(rng, scene, i)
        rows.append({"index": i, "question": question, "answer": answer, "choices": repr(options),
                     "category": MATHVISION_SUBJECTS[i % 2], "level": 1 + i % 5, "image": _b64_png(scene.render())})  # fmt: skip
    return rows


MATHVERSE_VERSIONS = ("Text Dominant", "Vision Intensive", "Vision Only")


def mathverse_rows(*, questions: int, seed: int) -> list[dict]:
    """A MathVerse stand-in in MathVerse_MINI's TSV columns: `answer` the option's letter or the value,
    `question_for_eval` (what its judge is shown), `metadata` (a dict's repr with subject and subfield, as MathVerse
    writes it) and `problem_version` (its table's rows: each version in turn)."""
    rng = random.Random(seed)
    rows = []
    for i in range(questions):
        scene = random_scene(rng)
        question, options, answer = _lettered_question(rng, scene, i)
        subfield = "color" if options else "count"
        rows.append({"index": i, "question": question, "answer": answer, "question_for_eval": question,
                     "metadata": repr({"split": "testmini", "source": "synthetic", "subject": "Plane Geometry",
                                       "subfield": subfield}),
                     "problem_version": MATHVERSE_VERSIONS[i % len(MATHVERSE_VERSIONS)], "query_cot": question,
                     "image": _b64_png(scene.render())})  # fmt: skip
    return rows


def stand_in_rows(kind: str, *, questions: int, seed: int) -> list[dict]:
    """The rows of a stand-in (a kind of satori.core.config.STAND_INS) in its benchmark's TSV layout; a WeMath
    stand-in counts problems, the others questions."""
    if kind == "synthetic_wemath":
        return wemath_rows(problems=questions, seed=seed)
    rows = {"synthetic_olympiadbench": olympiad_rows, "synthetic_mathvista": mathvista_rows,
            "synthetic_mathvision": mathvision_rows, "synthetic_mathverse": mathverse_rows}[kind]  # fmt: skip
    return rows(questions=questions, seed=seed)


def _shapes_question(rng: random.Random, scene: Scene) -> tuple[str, list[str], str, str, str]:
    """A shapes-task benchmark question: (question, options, correct letter, category, l2 category)."""
    target = rng.choice(scene.shapes)
    if rng.random() < 0.5:
        question = f"What color is the {target.kind}?"
        options, letter = _options(rng, target.color, sorted(COLORS))
        return question, options, letter, "color_recognition", "perception"
    question = f"Which shape is {target.color}?"
    options, letter = _options(rng, target.kind, [*SHAPES, "star", "hexagon"])
    return question, options, letter, "shape_recognition", "perception"


def write_benchmark_tsv(path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def satori_completion(caption: str, boxes: list[list[int]], answer: str) -> str:
    """A well-formed SATORI answer: caption, boxes, answer."""
    box_list = json.dumps(boxes, separators=(",", ":"))
    return f"<caption>{caption}</caption> <bbox>{box_list}</bbox> <answer>{answer}</answer>"


def warmup_examples(
    count: int, seed: int, seen_size, cue_share: float = 0.0, cue_answered: float = 0.0, cue_unanswered: str = "stop"
) -> list[tuple[Image.Image, str, str]]:
    """(image, user text, target completion) pairs teaching the SATORI format.

    Half are VQA-Verify-style questions, half MMBench-style multiple choice with
    the official evaluation's instruction appended. Target boxes are in the
    pixels of the image as the model sees it: `seen_size(w, h) -> (w', h')`.
    With cue_share, that share are color_cue questions. Their target stops at
    "<answer>" (the model learns to caption and box those scenes, to see their
    colour, but not the answer) except for the cue_answered share of them, shown
    whole: a weak start at the answers, which GRPO is left to make a habit of. With cue_unanswered "abstain"
    the others are answered ABSTAIN_ANSWER instead: an answer that is no option's letter.
    """
    rng = random.Random(f"warmup-{seed}")  # a stream of its own: no scene shared with the dataset or benchmarks
    cue_rng = random.Random(f"warmup-cue-{seed}")  # apart: with cue_share 0, the examples the tiny profile always had
    examples = []
    for i in range(count):
        if cue_rng.random() < cue_share:
            scene = cue_scene(cue_rng)
            seen_w, seen_h = seen_size(scene.width, scene.height)
            x1, y1, x2, y2 = scene.shapes[0].box
            box = [round(x1 * seen_w / scene.width), round(y1 * seen_h / scene.height),
                   round(x2 * seen_w / scene.width), round(y2 * seen_h / scene.height)]  # fmt: skip
            if cue_rng.random() < cue_answered:
                target = satori_completion(scene.caption(), [box], cue_letter(scene))
            elif cue_unanswered == "abstain":
                target = satori_completion(scene.caption(), [box], ABSTAIN_ANSWER)
            else:
                target = satori_completion(scene.caption(), [box], "")
                target = target[: target.index("<answer>") + len("<answer>")]
            examples.append((scene.render(), cue_item(scene)["question"], target))
            continue
        scene = random_scene(rng)
        seen_w, seen_h = seen_size(scene.width, scene.height)
        sx, sy = seen_w / scene.width, seen_h / scene.height
        if i % 2 == 0:
            item = vqa_item(rng, scene)
            text, answer, boxes = item["question"], item["answers"][0], item["bboxs"]
        else:
            target = rng.choice(scene.shapes)
            options, answer = _options(rng, target.color, sorted(COLORS))
            text = mcq_question(f"What color is the {target.kind}?", options) + SATORI_INSTRUCTION
            boxes = [list(target.box)]
        seen_boxes = [[round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy)] for x1, y1, x2, y2 in boxes]
        examples.append((scene.render(), text, satori_completion(scene.caption(), seen_boxes, answer)))
    return examples


def tokenizer_corpus(system_prompt: str, rows: int = 200, seed: int = 12345) -> list[str]:
    """Texts the tiny tokenizer's BPE is trained on: the synthetic data's words and the prompts around them."""
    texts = [system_prompt, SATORI_INSTRUCTION, mcq_question("Which shape is red?", ["a", "b", "c", "d"])]
    for _, text, target in warmup_examples(rows, seed, lambda w, h: (w, h)):
        texts += [text, target]
    return texts
