"""The interleaved prompt parser: placeholders, attribute binding, and every error it promises."""

from __future__ import annotations

import pytest

from sigma_studio.model.errors import PromptError
from sigma_studio.model.request.prompt import (
    ImagePart,
    TextPart,
    check_tokens,
    image_number,
    parse_prompt,
    parse_training_instruction,
    prompt_from_inputs,
)

DESIGN = "Place <id>the man <img1> next to <subject>the dog <img2> in the style of <style>this painting <img3>"


def test_design_prompt():
    p = parse_prompt(DESIGN, 3)
    assert p.parts == (
        TextPart("Place <id>the man"),
        ImagePart(0, ("<id>",), "<img1>"),
        TextPart("next to <subject>the dog"),
        ImagePart(1, ("<subject>",), "<img2>"),
        TextPart("in the style of <style>this painting"),
        ImagePart(2, ("<style>",), "<img3>"),
    )
    assert p.warnings == ()


@pytest.mark.parametrize("ph", ["<img2>", "<img_2>", "<image_2>", "<image 2>", "<IMAGE_2>", "<image2>", "<img 2>"])
def test_placeholder_forms(ph):
    p = parse_prompt(f"a {ph} b", 2, names=[2, 1])
    assert p.images[0].index == 0 and p.images[0].placeholder == ph


def test_several_attributes_bind_to_one_image_and_order_follows_placeholders():
    p = parse_prompt("wear <subject><clothing>the jacket <img2> like <img1>", 2)
    assert p.images[0] == ImagePart(1, ("<subject>", "<clothing>"), "<img2>")
    assert p.images[1] == ImagePart(0, (), "<img1>")


def test_image_placed_twice():
    p = parse_prompt("<id>face <img1> and <style>style <img1>", 1)
    assert [i.attributes for i in p.images] == [("<id>",), ("<style>",)]


def test_unknown_token_suggests_the_closest():
    with pytest.raises(PromptError, match=r"Unknown token <styel>\. Did you mean <style>\?"):
        parse_prompt("a <styel> b <img1>", 1)


def test_control_tokens_are_refused():
    with pytest.raises(PromptError, match="control token"):
        parse_prompt("a <|im_start|> b", 0)


def test_placeholder_without_image():
    with pytest.raises(PromptError, match=r"<img3> names an image that was not given \(given: img1, img2\)"):
        parse_prompt("a <img1> b <img2> c <img3>", 2)


def test_unplaced_images_are_appended_with_a_warning():
    p = parse_prompt("a cat <img1>", 3)
    assert [i.index for i in p.images] == [0, 1, 2]
    assert isinstance(p.parts[-1], ImagePart) and p.parts[-1].placeholder is None
    assert len(p.warnings) == 2 and "img2 is not placed" in p.warnings[0]


def test_trailing_attribute_token_warns():
    p = parse_prompt("a cat <img1> in <style>", 1)
    assert any("<style>" in w and "not followed by an image" in w for w in p.warnings)


def test_too_many_images():
    with pytest.raises(PromptError, match="places 3 images; at most 2"):
        parse_prompt("<img1> <img2> <img3>", 3, max_images=2)


def test_empty_prompt():
    with pytest.raises(PromptError, match="empty"):
        parse_prompt("   ", 0)


def test_duplicate_names():
    with pytest.raises(PromptError, match="same name"):
        parse_prompt("a", 2, names=[1, 1])


@pytest.mark.parametrize(("name", "n"), [("img1", 1), ("image_12", 12), ("image 3", 3), ("4", 4), ("IMG5", 5)])
def test_image_names(name, n):
    assert image_number(name) == n


@pytest.mark.parametrize("name", ["man", "img0", "img-1", ""])
def test_bad_image_names(name):
    with pytest.raises(PromptError, match="not a placeholder name"):
        image_number(name)


def test_input_list_is_verbatim():
    p = prompt_from_inputs(["Place <id>the man from ", object(), "  rest"])
    assert p.parts == (TextPart("Place <id>the man from "), ImagePart(0, ("<id>",)), TextPart("  rest"))


def test_training_rules():
    tp = parse_training_instruction("Put <id>a <image_1> then <image 9> b <image_3> c <image2>", 4)
    # <image 9> is beyond the list (skipped); <image2> does not match the training regex; image 2 is dropped
    assert tp.skipped_placeholders == (9,)
    assert tp.dropped_references == (1,)
    assert [p.index for p in tp.parts if isinstance(p, ImagePart)] == [0, 2, 3]
    assert tp.parts[tp.target_index] == ImagePart(3)  # never named: appended at the end
    assert tp.parts[0] == TextPart("Put <id>a")


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("<colour>", "<style>"), ("<Color>", "<style>"), ("<face>", "<id>"), ("<outfit>", "<clothing>"),
     ("<styel>", "<style>"), ("<subjcet>", "<subject>")],
)  # fmt: skip
def test_did_you_mean_goes_by_meaning_then_spelling(typed, meant):
    with pytest.raises(PromptError, match=rf"Unknown token {typed}\. Did you mean {meant}\?"):
        check_tokens(f"a cat {typed} <img1>")


def test_no_suggestion_when_nothing_is_close():
    with pytest.raises(PromptError) as err:
        check_tokens("a cat <zzzqqq> <img1>")
    assert "Did you mean" not in str(err.value) and "Attribute tokens are" in str(err.value)
