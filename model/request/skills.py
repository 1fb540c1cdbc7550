"""What a request asks of a model, against what the model was trained to read (``ArchConfig.skills``).

A model fed something it never learnt does not fail: it quietly ignores it (BAGEL given routing maps, the shapes
model given a Canny edge map). So a request that needs a skill the loaded model lacks carries a warning that the
CLI, the web UI and the API all show. A model whose skills are not known (``None``) is never warned about.
"""

from __future__ import annotations

from ..config import SKILLS, ArchConfig
from .prompt import ImagePart, Part
from .structure import ControlSpec


def needed_skills(parts: tuple[Part, ...] | list[Part], controls: ControlSpec, think: bool | None = None) -> list[str]:
    """The skills (keys of :data:`~model.config.SKILLS`) that the user's prompt parts, controls and ``--think``
    call on."""
    needs = []
    if any(p.attributes for p in parts if isinstance(p, ImagePart)):
        needs.append("attribute_tokens")
    if controls.boxes and not controls.subjects:
        needs.append("boxes")
    if controls.canny:
        needs.append("canny")
    if controls.depth or controls.depth_map:
        needs.append("depth")
    if controls.subjects or controls.background:
        needs.append("subjects")
    if think:
        needs.append("plans")
    return needs


def skill_warnings(
    arch: ArchConfig, parts: tuple[Part, ...] | list[Part], controls: ControlSpec, think: bool | None = None
) -> list[str]:
    """One warning per skill the request needs and the model was not trained for (none when its skills are
    not known)."""
    if arch.skills is None:
        return []
    known = ", ".join(SKILLS[s].split(" (")[0] for s in arch.skills) or "plain text and edits only"
    return [
        f"this model was not trained to read {SKILLS[skill]}: it will most likely ignore them (it reads: {known})"
        for skill in needed_skills(parts, controls, think)
        if skill not in arch.skills
    ]
