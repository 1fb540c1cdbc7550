"""The shapes world's task families as SIGMA-format rows (``instruction_list``, ``image_list``; the last image is
the target), plus ``family`` and ``meta`` columns that the pixel evaluation reads.

Families (``<image_N>`` is the training placeholder; users write ``<imgN>``):

* **compose** ``Draw the <subject>shape <image_1> in the <style>colour of <image_2>.``: A's shape in B's colour.
  Sentence order and image order vary, and every pair of images comes twice, with the tokens swapped.
* **select** ``Draw only <select>the star <image_1>.``: the named one of two or three objects, centred.
* **layout** ``Draw the <subject>shape <image_1> placed like <layout>this box <image_2>.``: A's object filling B's
  white box.
* **background** ``Put the <subject>shape <image_1> on the <background>background of <image_2>.``
* **text** ``a red star``: plain text to image.

Training rows may carry the plan the model should write before drawing (``plans``: BAGEL's think mode,
:mod:`model.run.think`): ``Draw only <select>the star <image_1>. <think>the star is red</think>``, the target's
shape, then its colour (`` on blue`` added for background's), the describe family's order: a colour named right
after its shape is what the model reads best on held-out pairs (docs/SHAPES.md). A *place* plan names where the
object stands instead (``the star is at the top left``): find's always, select's with ``select:place``; it never
writes a held-out pair. A *scene* plan (select's, with ``select:scene``) names every object of the reference left to
right, in the describe family's words (``the circle is red and the star is blue``): it reads each object where it
stands rather than searching for the named one; ``select:scene+colour`` adds the named one's colour plan after it
(``..., so the star is blue``). Evaluation rows never carry one: the model writes its own.

Training rows of the families whose text names no colour (:data:`SHADED_FAMILIES`) may be drawn in random shades
(``shades``, a share of them): every colour name of the row gets a fresh shade of itself (:func:`shade_palette`), so
the target's exact colour can only be copied from its reference, never recalled from the name (docs/SHAPES.md,
"Shades"). A shade is read as its own name by the pixel reader, so the held-out pairs stay out of every picture.

The training-only families (:data:`AUXILIARY`: describe, find, boxed) are in :mod:`model.shapes.auxiliary`; the random
draws every family shares, with the held-out pairs, in :mod:`model.shapes.draws`.

:data:`HELD_OUT` (shape, colour) pairs never appear in any training image; every evaluation target is one of them,
so the evaluation measures composition, not memory. Rows are a pure function of (seed, split, family, index).
The ``seen`` split is the diagnostic opposite: fresh rows (keys no training row uses) whose targets are training
pairs, so that held-out against seen says how much of a family's failure is the unseen pair.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal, get_args

from PIL import Image

from ..data.dataset import Example, write_parquet
from ..errors import InputError
from ..files import check_output_dir, write_json
from ..request.tokens import ATTRIBUTE_TOKENS
from . import draws
from .auxiliary import AUXILIARY, boxed, describe, find, place_words, scene_words
from .draws import COLOUR_NAMES, HELD_OUT
from .world import CANVAS, COLOURS, GREY, SHAPES, Palette, Thing, box_picture, centred, render, shade_palette

FAMILIES: tuple[str, ...] = ("compose", "select", "layout", "background", "text")
# Rows that can end with a plan (plan_of); select's may instead name the object's place in the reference, or every
# object of it (then, with +colour, the named one's colour plan).
PLANNED: tuple[str, ...] = (*FAMILIES, "find", "boxed", "select:place", "select:scene", "select:scene+colour")
# Share of each family in the training rows.
MIX: dict[str, float] = {"compose": 0.35, "select": 0.2, "layout": 0.2, "background": 0.1, "text": 0.15}
EvalPairs = Literal["held-out", "seen"]  # what eval/ targets: the held-out pairs, or training pairs (a diagnostic)
EVAL_PAIRS: tuple[str, ...] = get_args(EvalPairs)
SHADED_FAMILIES: tuple[str, ...] = ("compose", "select", "layout", "background", "find")  # no colour word in their text
# The families whose target's place does not follow the reference's object (compose's is centred, layout's in its
# box): with --offcentre, that share of their training rows draw that object anywhere, so no copy in place passes.
LOOSE_FAMILIES: tuple[str, ...] = ("compose", "layout")


def _target_meta(thing: Thing, background=GREY, **extra) -> dict:
    return {"shape": thing.shape, "colour": thing.colour, "box": list(thing.box), "background": list(background),
            **extra}  # fmt: skip


def _placed(shape: str, colour: str, size: float, canvas: int, loose: random.Random | None) -> Thing:
    """A reference's object: centred (the world's rule), or with a ``loose`` stream anywhere on the canvas."""
    if loose is None:
        return centred(shape, colour, size, canvas)
    left, top = (round(loose.uniform(0, canvas - size), 1) for _ in range(2))
    return Thing(shape, colour, (left, top, size, size))


def compose_pair(
    rng: random.Random,
    split: str,
    canvas: int,
    swap_id: int,
    paint: Palette = COLOURS,
    loose: random.Random | None = None,
) -> list[Example]:
    """Two rows on the same two images: A's shape in B's colour, and (tokens swapped) B's shape in A's colour; with
    ``loose``, the references' objects stand anywhere (the targets stay centred)."""
    if split == "eval":
        if rng.random() < 0.8:
            i, j = rng.sample(range(6), 2)  # targets (shape i, colour i) and (shape j, colour j): both held out
            a, b = (SHAPES[i], COLOUR_NAMES[j]), (SHAPES[j], COLOUR_NAMES[i])
        else:
            a, b = ("circle", "black"), ("square", "white")
    else:
        while True:
            sa, sb = rng.sample(SHAPES, 2)
            ca, cb = rng.sample(COLOUR_NAMES, 2)
            if not {(sa, ca), (sb, cb), (sa, cb), (sb, ca)} & HELD_OUT:
                a, b = (sa, ca), (sb, cb)
                break
    size_a, size_b = draws.size(rng, canvas), draws.size(rng, canvas)
    ref_a, ref_b = _placed(*a, size_a, canvas, loose), _placed(*b, size_b, canvas, loose)
    a_first = rng.random() < 0.5
    refs = [ref_a, ref_b] if a_first else [ref_b, ref_a]
    num = {id(ref_a): 1 if a_first else 2, id(ref_b): 2 if a_first else 1}
    template = rng.randrange(2)
    out = []
    for shape_ref, colour_ref in ((ref_a, ref_b), (ref_b, ref_a)):
        s, c = num[id(shape_ref)], num[id(colour_ref)]
        if template == 0:
            text = f"Draw the <subject>shape <image_{s}> in the <style>colour of <image_{c}>."
        else:
            text = f"Use the <style>colour of <image_{c}> for the <subject>shape <image_{s}>."
        target = centred(shape_ref.shape, colour_ref.colour, shape_ref.box[2], canvas)
        images = [render([r], canvas=canvas, palette=paint) for r in refs + [target]]
        out.append(Example("compose", text, images, _target_meta(target, swap=swap_id)))
    return out


def select(rng: random.Random, split: str, canvas: int, paint: Palette = COLOURS, fair: bool = False) -> Example:
    named, things = draws.scene(rng, split, canvas, fair)
    target = centred(*named, draws.size(rng, canvas), canvas)
    text = f"Draw only <select>the {named[0]} <image_1>."
    pictures = [render(things, canvas=canvas, palette=paint), render([target], canvas=canvas, palette=paint)]
    source = next(t.box for t in things if (t.shape, t.colour) == named)  # where the reference shows it
    objects = [[t.shape, t.colour, list(t.box)] for t in things]  # the reference's, as drawn
    return Example("select", text, pictures, _target_meta(target, source=list(source), objects=objects))


def layout(
    rng: random.Random, split: str, canvas: int, paint: Palette = COLOURS, loose: random.Random | None = None
) -> Example:
    pair = draws.pair(rng, split == "eval")
    obj = _placed(*pair, draws.size(rng, canvas), canvas, loose)
    box = draws.layout_box(rng, canvas)
    target = Thing(*pair, box)
    if rng.random() < 0.5:
        text, refs = "Draw the <subject>shape <image_1> placed like <layout>this box <image_2>.", [obj, None]
    else:
        text, refs = "Draw the <subject>shape <image_2> placed like <layout>this box <image_1>.", [None, obj]
    images = [render([r], canvas=canvas, palette=paint) if r else box_picture(box, canvas) for r in refs]
    return Example("layout", text, [*images, render([target], canvas=canvas, palette=paint)], _target_meta(target))


def background(rng: random.Random, split: str, canvas: int, paint: Palette = COLOURS) -> Example:
    pair = draws.pair(rng, split == "eval")
    name = rng.choice([c for c in COLOUR_NAMES if c != pair[1]])
    obj = centred(*pair, draws.size(rng, canvas), canvas)
    plain = Image.new("RGB", (canvas, canvas), paint[name])
    text = "Put the <subject>shape <image_1> on the <background>background of <image_2>."
    target = render([obj], background=paint[name], canvas=canvas, palette=paint)
    pictures = [render([obj], canvas=canvas, palette=paint), plain, target]
    return Example("background", text, pictures, _target_meta(obj, COLOURS[name]))


def text(rng: random.Random, split: str, canvas: int) -> Example:
    shape, colour = draws.pair(rng, split == "eval")
    target = centred(shape, colour, draws.size(rng, canvas), canvas)
    return Example("text", f"a {colour} {shape}", [render([target], canvas=canvas)], _target_meta(target))


def plan_of(ex: Example, form: str = "colour") -> str:
    """What the target shows, its shape first: ``the star is red`` (``the star is red on blue``); for find, and for
    select with ``form="place"``, where the object stands in the reference instead (``the star is at the top left``:
    :func:`~model.shapes.auxiliary.place_words`), a plan that never names a colour, so never a held-out pair; for
    select with ``form="scene"``, every object of the reference left to right (``the circle is red and the star is
    blue``, the describe family's sentence), and with ``form="scene+colour"`` the colour plan after it (``..., so
    the star is blue``)."""
    meta = ex.meta
    if form in ("scene", "scene+colour"):
        scene = scene_words(meta["objects"])
        return scene if form == "scene" else f"{scene}, so {plan_of(ex)}"
    if ex.family == "find" or form == "place":
        return f"the {meta['shape']} is {place_words(meta.get('source', meta['box']), ex.images[0].width)}"
    plan = f"the {meta['shape']} is {meta['colour']}"
    background = tuple(meta.get("background", GREY))
    if background != GREY:
        plan += f" on {next(n for n, rgb in COLOURS.items() if tuple(rgb) == background)}"
    return plan


def _coin(tag: str, families: tuple[str, ...], family: str, split: str, seed: int, k: int, share: float):
    """A training option's own random stream for draw ``k`` when the draw falls in its ``share`` (a training row of
    one of its ``families``), else None. Being a stream of its own, an option at share 0 leaves the world's rows
    exactly as they are."""
    if not share or split != "train" or family not in families:
        return None
    coin = random.Random(f"{seed}/{split}/{family}/{k}/{tag}")
    return coin if coin.random() < share else None


def _paint(family: str, split: str, seed: int, k: int, shades: float) -> Palette:
    """The palette of draw ``k``: the world's, or (a training row of a shaded family, with chance ``shades``) a
    palette of shades."""
    coin = _coin("shades", SHADED_FAMILIES, family, split, seed, k, shades)
    return COLOURS if coin is None else shade_palette(coin)


def _loose(family: str, split: str, seed: int, k: int, offcentre: float) -> random.Random | None:
    """The placement stream of draw ``k``: None (its references' objects centred), or (a training row of a loose
    family, with chance ``offcentre``) the stream that places them anywhere."""
    return _coin("offcentre", LOOSE_FAMILIES, family, split, seed, k, offcentre)


def _batches(
    family: str, split: str, seed: int, canvas: int, shades: float = 0.0, fair: bool = False, offcentre: float = 0.0
) -> Iterator[list[Example]]:
    """Every row of one family in index order, one draw at a time (a compose draw is a swapped pair of rows)."""
    k = 0
    while True:
        rng = random.Random(f"{seed}/{split}/{family}/{k}")
        paint = _paint(family, split, seed, k, shades)
        loose = _loose(family, split, seed, k, offcentre)
        if family == "compose":
            batch = compose_pair(rng, split, canvas, k // 2, paint, loose)
        elif family in ("select", "find"):  # a scene of objects, one of them named
            batch = [{"select": select, "find": find}[family](rng, split, canvas, paint, fair)]
        elif family == "layout":
            batch = [layout(rng, split, canvas, paint, loose)]
        elif family == "background":
            batch = [background(rng, split, canvas, paint)]
        else:
            batch = [{"text": text, "describe": describe, "boxed": boxed}[family](rng, split, canvas)]
        for ex in batch:
            if paint is not COLOURS:  # the row's own palette: its meta's colour names stand for these
                ex.meta["painted"] = {name: list(rgb) for name, rgb in paint.items()}
            if loose is not None:
                ex.meta["offcentre"] = True
        yield batch
        k += len(batch)


def examples(
    family: str,
    split: str,
    count: int,
    seed: int = 0,
    canvas: int = CANVAS,
    shades: float = 0.0,
    fair: bool = False,
    attribute_tokens: bool = True,
    offcentre: float = 0.0,
) -> Iterator[Example]:
    """``count`` rows of one family (compose rows come in swapped pairs), each a pure function of its index; with
    ``shades``, that share of a shaded family's training rows is drawn in random shades (:func:`shade_palette`);
    with ``fair``, select's and find's training scenes draw fair distractors (:func:`~model.shapes.draws.scene`);
    without ``attribute_tokens`` (the ablation's token-free arm), each instruction is :func:`neutral`'s; with
    ``offcentre``, that share of the loose families' training rows (:data:`LOOSE_FAMILIES`) show the reference's
    object anywhere on its canvas, not in the middle."""
    k = 0
    for batch in _batches(family, split, seed, canvas, shades, fair, offcentre):
        if k >= count:
            return
        for ex in batch[: count - k]:
            ex.instruction = ex.instruction if attribute_tokens else neutral(ex.instruction)
            yield ex
            k += 1


def row_key(ex: Example) -> bytes:
    """What makes two rows the same row: the instruction and every picture's pixels."""
    digest = hashlib.sha256(ex.instruction.encode())
    for image in ex.images:
        digest.update(image.tobytes())
    return digest.digest()


NEUTRAL_WORD = "this"  # what the ablation without attribute tokens writes in their place


def neutral(instruction: str) -> str:
    """The instruction with every attribute token replaced by :data:`NEUTRAL_WORD` (the Table 4 ablation)."""
    for token in ATTRIBUTE_TOKENS:
        instruction = instruction.replace(token, f"{NEUTRAL_WORD} ")
    return instruction


def _unseen_rows(family, n, seed, canvas, form, trained: set[bytes], skipped: dict) -> Iterator[Example]:
    """``n`` rows of the ``seen`` split (training pairs) in the written ``form``, leaving out, and counting in
    ``skipped``, every draw with a row whose key is in ``trained``."""
    k, draws = 0, 0
    for batch in _batches(family, "seen", seed, canvas):
        draws += 1
        if draws > 50 * n + 1000:
            raise InputError(f"only {k} of {n} {family} rows with a training pair differ from every training row "
                             "of this world; write it with fewer --rows")  # fmt: skip
        batch = [form(ex) for ex in batch]
        if any(row_key(ex) in trained for ex in batch):
            skipped[family] = skipped.get(family, 0) + len(batch)
            continue
        for ex in batch[: n - k]:
            yield ex
            k += 1
        if k >= n:
            return


def check_world_options(eval_pairs: str, plans: tuple[str, ...], shades: float, auxiliary, offcentre: float) -> None:
    unknown = sorted(set(plans) - set(PLANNED))
    forms = [p for p in plans if p.partition(":")[0] == "select"]
    if len(forms) > 1:
        raise InputError(f"plans: select takes one plan form, not {len(forms)} ({' and '.join(forms)})")
    if unknown:
        raise InputError(f"plans for {', '.join(unknown)}: the families with plans are {', '.join(PLANNED)}")
    for family, n in (auxiliary or {}).items():
        if family not in AUXILIARY or n < 0:
            raise InputError(f"{n} rows of {family!r}: the training-only families are {', '.join(AUXILIARY)}, "
                             "each with 0 rows or more")  # fmt: skip
    if not 0.0 <= shades <= 1.0:
        raise InputError(f"shades {shades}: the share of rows drawn in random shades is between 0 and 1")
    if not 0.0 <= offcentre <= 1.0:
        raise InputError(f"offcentre {offcentre}: the share of rows whose reference stands anywhere is between 0 and 1")
    if eval_pairs not in EVAL_PAIRS:
        raise InputError(f"eval pairs {eval_pairs!r}: choose {' or '.join(EVAL_PAIRS)}")


def _world_extras(
    eval_pairs: str, plans: tuple[str, ...], shades: float, skipped: dict[str, int], fair: bool, offcentre: float
) -> dict:
    """world.json's optional keys: the default world's world.json stays as it was."""
    extras: dict = {"plans": list(plans)} if plans else {}
    if shades:
        extras["shades"] = shades
    if offcentre:
        extras["offcentre"] = offcentre
    if fair:
        extras["fair_distractors"] = True
    if eval_pairs == "seen":
        extras["seen_skipped"] = {family: skipped.get(family, 0) for family in FAMILIES}
    return extras


def make_world(
    out: str | Path,
    rows: int,
    eval_rows: int = 40,
    seed: int = 0,
    canvas: int = CANVAS,
    *,
    attribute_tokens: bool = True,
    eval_pairs: EvalPairs = EVAL_PAIRS[0],
    auxiliary: Mapping[str, int] | None = None,
    plans: tuple[str, ...] = (),
    shades: float = 0.0,
    fair_distractors: bool = False,
    offcentre: float = 0.0,
) -> dict:
    """Write ``out/train/<family>.parquet`` (``rows`` in all, split by :data:`MIX`) and ``out/eval/<family>.parquet``
    (``eval_rows`` per family, every target a held-out pair). Returns {split/family: rows written}.

    ``attribute_tokens=False`` writes the same rows with a neutral word in place of each attribute token.
    ``eval_pairs="seen"`` draws eval/ from the ``seen`` split instead: training pairs, in rows none of this world's
    training rows is (a drawn row identical to one is left out and counted in world.json's ``seen_skipped``: the
    text family has few distinct rows of a pair); with the recipe's --rows and --seed those are the MoT's rows.
    ``auxiliary`` gives the rows of each training-only family (:data:`AUXILIARY`) in ``train/<family>.parquet``.
    The training rows of the families in ``plans`` end with their plan (:func:`plan_of`, think mode); ``shades``,
    ``fair_distractors`` and ``offcentre`` draw training rows as :func:`examples` says."""
    check_world_options(eval_pairs, plans, shades, auxiliary, offcentre)
    out = check_output_dir(out)
    counts, trained, skipped = {}, set(), {}  # with eval_pairs "seen": every training row's key, the draws left out

    def form(ex: Example) -> Example:  # the ablation's token-free arm, for the "seen" draws filtered one by one
        ex.instruction = ex.instruction if attribute_tokens else neutral(ex.instruction)
        return ex

    def train_rows(family: str, n: int) -> Iterator[Example]:
        plan_form = next((p.partition(":")[2] or "colour" for p in plans if p.partition(":")[0] == family), None)
        for ex in examples(family, "train", n, seed, canvas, shades, fair_distractors, attribute_tokens, offcentre):
            trained.add(row_key(ex))  # (read with eval_pairs "seen") the row as drawn: a plan makes no row new
            if plan_form:
                ex.instruction += f" <think>{plan_of(ex, plan_form)}</think>"
            yield ex

    try:
        for family in FAMILIES:
            n_train = max(2, round(rows * MIX[family]))
            counts[f"train/{family}"] = write_parquet(out / "train" / f"{family}.parquet", train_rows(family, n_train))
            if eval_pairs == "seen":
                chosen = _unseen_rows(family, eval_rows, seed, canvas, form, trained, skipped)
            else:
                chosen = examples(family, "eval", eval_rows, seed, canvas, attribute_tokens=attribute_tokens)
            counts[f"eval/{family}"] = write_parquet(out / "eval" / f"{family}.parquet", chosen)
        for family, n in ((f, n) for f, n in (auxiliary or {}).items() if n):
            counts[f"train/{family}"] = write_parquet(out / "train" / f"{family}.parquet", train_rows(family, n))
        info = {"seed": seed, "canvas": canvas, "rows": counts, "attribute_tokens": attribute_tokens,
                "eval_pairs": eval_pairs, "held_out": sorted(map(list, HELD_OUT))}  # fmt: skip
        info |= _world_extras(eval_pairs, plans, shades, skipped, fair_distractors, offcentre)
        write_json(out / "world.json", info)  # written last: it marks the data as complete
    except OSError as exc:  # a full disk, or a folder made read-only meanwhile: one line, not a traceback
        why = exc.strerror or exc
        raise InputError(f"--out {out}: the world cannot be written ({why}); choose another place") from None
    return counts
