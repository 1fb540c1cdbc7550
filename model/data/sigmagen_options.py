"""The SIGMA-GEN converter's training-time choices, one named option each (``sigma sigmagen make`` has a flag for
every field). Where the SIGMA-GEN paper (ICLR 2026, §3-4) gives a value it is the default; where it gives none, the
default is ours and docs/SIGMAGEN.md says so."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import ROUTING_STEP, SHEET_ROWS
from ..errors import InputError
from ..request.multisubject import MAX_SUBJECTS

PRECISIONS = ("box", "box3d", "mask", "mask_depth")  # every structure input the converter can draw
PAPER_PRECISIONS = ("box", "box3d", "mask_depth")  # the paper's three: 2-D box, 3-D box, mask + depth
DRAWS = ("example", "subject")  # one precision per row (the paper), or one per subject
CHANNELS = ("ascending", "descending", "structure")  # the spatial control's channels (spatial_control), in order
MIN_TILE, MAX_TILE = 8, 1024  # identity-sheet cell sizes (the model shrinks a reference to a 1024 px long edge)
SHARES = ("channel_drop", "crop_jitter", "flip", "compose_share", "full_depth", "min_area", "mask_dilation",
          "box_dilation", "box_aspect_jitter")  # fmt: skip


@dataclass(frozen=True)
class SigmaGenOptions:
    """The conversion's training-time choices (each can be changed; docs/SIGMAGEN.md compares them to the paper)."""

    max_subjects: int = MAX_SUBJECTS
    min_area: float = 0.005  # smallest instance kept, as a fraction of the picture
    precision: tuple[str, ...] = PAPER_PRECISIONS  # structure inputs drawn among (those the scene supports)
    precision_draw: str = "example"  # "example": one structure input for every subject of a row (the paper)
    channel_drop: float = 0.1  # chance per row that exactly one spatial-control channel is zeroed (the paper's 0.1)
    drop_channels: tuple[str, ...] = CHANNELS  # the channels that drop draws among (those holding anything)
    mask_dilation: float = 0.05  # a mask grows by 0..this x its box's shorter side, in whole pixels (ours)
    box_dilation: float = 0.05  # each side of a 2-D box moves out by 0..this x the box's width or height (ours)
    box_aspect_jitter: float = 0.01  # a 2-D box's aspect ratio is scaled by 1 +- up to this (the paper's 1 %)
    identities: str | None = None  # folder of prepared identities IDENTITIES/<scene id>/<instance key>.png
    crop_jitter: float = 0.1  # identity crops (without a prepared one) move and grow by up to this of their box
    flip: float = 0.5  # identity crops are mirrored with this probability
    compose_share: float = 0.5  # share of rows prompted with the full caption; the rest get the background's
    background_prompt: str = "a scene"  # the background prompt when the data has no background caption
    full_depth: float = 0.0  # share of rows whose structure is the whole scene's depth (the paper's Table 3 variant)
    tile: int = 256
    seed: int = 0
    routing_step: int = ROUTING_STEP  # routing-map levels per subject; the trained model stores the same value
    sheet_rows: int = SHEET_ROWS  # identity-sheet cells per column; the trained model stores the same value

    def __post_init__(self) -> None:
        self._check_choices()
        for name in SHARES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"--{name.replace('_', '-')} must be in [0, 1] (got {getattr(self, name)})")
        if not self.background_prompt.strip():
            raise InputError("--background-prompt must not be empty: it is the prompt of a row without a background "
                             "caption (the default is 'a scene')")  # fmt: skip
        if self.identities is not None and not Path(self.identities).is_dir():
            raise InputError(f"--identities {self.identities} is not a folder: give the folder that holds "
                             "<scene id>/<instance key>.png")  # fmt: skip
        self._check_routing()
        if not MIN_TILE <= self.tile <= MAX_TILE:
            raise InputError(f"--tile must be {MIN_TILE}..{MAX_TILE} pixels (got {self.tile}): the model sees each "
                             f"reference at {MAX_TILE} px at most; the default is 256")  # fmt: skip

    def _check_choices(self) -> None:
        unknown = sorted(set(self.precision) - set(PRECISIONS))
        if unknown or not self.precision:
            raise InputError(f"--precision {','.join(unknown) or '(none)'}: choose from {', '.join(PRECISIONS)}")
        if self.precision_draw not in DRAWS:
            raise InputError(f"--precision-draw {self.precision_draw}: choose example (one structure input a row, "
                             "the paper) or subject (one a subject)")  # fmt: skip
        unknown = sorted(set(self.drop_channels) - set(CHANNELS))
        if unknown or not self.drop_channels:
            raise InputError(f"--drop-channels {','.join(unknown) or '(none)'}: choose from {', '.join(CHANNELS)}")

    def _check_routing(self) -> None:
        if not 1 <= self.routing_step <= 255:
            raise InputError(f"--routing-step must be 1..255 (got {self.routing_step})")
        if not 1 <= self.sheet_rows <= MAX_SUBJECTS:
            raise InputError(f"--sheet-rows must be 1..{MAX_SUBJECTS} (got {self.sheet_rows}): identity-sheet cells "
                             f"per column, the paper's is {SHEET_ROWS}")  # fmt: skip
        if not 1 <= self.max_subjects <= MAX_SUBJECTS:
            raise InputError(f"--max-subjects must be 1..{MAX_SUBJECTS} (got {self.max_subjects})")
        if self.max_subjects * self.routing_step > 255:  # subject k is drawn at level k * step, at most 255
            raise InputError(
                f"--routing-step {self.routing_step} cannot tell {self.max_subjects} subjects apart (--max-subjects; "
                f"the routing maps hold 255 levels, so step {self.routing_step} fits {255 // self.routing_step}): "
                f"the largest step that fits {self.max_subjects} subjects is {255 // self.max_subjects}; lower "
                "--routing-step or --max-subjects"
            )
