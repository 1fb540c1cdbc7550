"""Prompt <-> slot synchronisation of the web UI, as plain functions."""

from __future__ import annotations

from sigma_studio.webui.state import (
    MAX_SLOTS,
    Slot,
    UIState,
    add_slot,
    move_slot,
    read_prompt,
    remove_slot,
    set_image,
    set_tokens,
)


def two() -> UIState:
    s = UIState("Place the man", (Slot(), Slot()))
    s = set_image(s, 0, "/tmp/man.png")
    return set_image(s, 1, "/tmp/dog.png")


def test_upload_appends_the_placeholder_once():
    s = two()
    assert s.prompt == "Place the man <img1> <img2>"
    assert set_image(s, 0, "/tmp/other.png").prompt == s.prompt


def test_choosing_tokens_rewrites_the_text_in_front_of_the_placeholder():
    s = set_tokens(two(), 0, ["<id>"])
    assert s.prompt == "Place the man <id> <img1> <img2>"
    s = set_tokens(s, 0, ["<clothing>", "<subject>"])  # several per image, canonical order
    assert s.prompt == "Place the man <subject><clothing> <img1> <img2>"
    assert s.slots[0].tokens == ("<subject>", "<clothing>")
    s = set_tokens(s, 0, [])
    assert s.prompt == "Place the man <img1> <img2>"


def test_tokens_for_an_unplaced_slot_add_its_placeholder():
    s = set_tokens(UIState("a cat", (Slot("/tmp/a.png"),)), 0, ["<style>"])
    assert s.prompt == "a cat <style> <img1>"


def test_editing_the_prompt_updates_the_slots():
    s = read_prompt(two(), "A <style>painting <img2> of <id>him <img1>")
    assert [sl.tokens for sl in s.slots] == [("<id>",), ("<style>",)] and s.error == ""
    bad = read_prompt(two(), "a <styel> <img1>")
    assert "Did you mean <style>" in bad.error and bad.slots == two().slots


def test_remove_renumbers_and_keeps_text_and_slots_in_agreement():
    s = UIState("x <id> <img1> y <subject> <img2> z <style> <img3>", (Slot("/a"), Slot("/b"), Slot("/c")))
    s = read_prompt(s, s.prompt)
    r = remove_slot(s, 1)
    assert r.prompt == "x <id> <img1> y z <style> <img2>"
    assert [sl.image for sl in r.slots] == ["/a", "/c"]
    assert read_prompt(r, r.prompt).slots == r.slots


def test_move_swaps_numbers():
    s = read_prompt(two(), "the man <id> <img1> and the dog <subject> <img2>")
    m = move_slot(s, 1, -1)
    assert m.prompt == "the man <id> <img2> and the dog <subject> <img1>"
    assert [sl.image for sl in m.slots] == ["/tmp/dog.png", "/tmp/man.png"]
    assert read_prompt(m, m.prompt).slots == m.slots
    assert move_slot(s, 0, -1) == s


def test_slot_limit():
    s = UIState()
    for _ in range(MAX_SLOTS - 1):
        s = add_slot(s)
    assert len(s.slots) == MAX_SLOTS and "At most" in add_slot(s).error


def test_tokens_written_inside_the_text_are_edited_in_place():
    s = read_prompt(two(), "A portrait of <id>this astronaut <img1> holding <subject>this cat <img2>")
    s2 = set_tokens(s, 0, ["<style>"])
    assert s2.prompt == "A portrait of <style>this astronaut <img1> holding <subject>this cat <img2>"
    assert read_prompt(s2, s2.prompt).slots == s2.slots
    s3 = set_tokens(s, 0, [])
    assert s3.prompt == "A portrait of this astronaut <img1> holding <subject>this cat <img2>"
    assert read_prompt(s3, s3.prompt).slots == s3.slots


def test_remove_takes_the_bound_tokens_along_and_keeps_newlines():
    s = read_prompt(two(), "A portrait of <id>this astronaut <img1>\nholding <subject>this cat <img2>")
    r = remove_slot(s, 0)
    assert r.prompt == "A portrait of this astronaut\nholding <subject>this cat <img1>"
    assert read_prompt(r, r.prompt).slots == r.slots
