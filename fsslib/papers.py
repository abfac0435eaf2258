"""What the four papers report on PASCAL-5i, in one place: the lessons set these numbers beside the toy tier's.

Each :class:`Reported` row is one system of one paper's table, mIoU (%) per fold (0-3) and the mean, with
ResNet-50, as printed (``tests/test_papers.py`` finds each row in the paper's text when ``shared/papers`` is
beside the checkout). The baselines are the rows the papers print for them (PFENet's is its own TPAMI number,
60.8 at 1-shot, in every paper that lists it).

    from fsslib.papers import reported
    reported("piclip", "piclip").mean        # 71.2
    reported("piclip", "pfenet", shots=5)    # PFENet's 5-shot row of PI-CLIP's Table 1
"""
from __future__ import annotations

from dataclasses import dataclass

from fsslib.errors import unknown

PAPER_FILES = {
    "piclip": "piclip_prior_information_with_clip.md",
    "lfss": "lfss_language_guided_fss.md",
    "clip-dinoiser-support": "clip_dinoiser_support_images.md",
    "qgnet": "qgnet_global_local_contrastive.md",
}


@dataclass(frozen=True)
class Reported:
    """One row of a paper's PASCAL-5i table: ``folds`` (mIoU of folds 0-3, None where not printed) and ``mean``."""

    paper: str
    method: str
    shots: int
    ways: int
    folds: tuple[float | None, ...]
    mean: float
    where: str  # the table, as the paper names it

    @property
    def label(self) -> str:
        return f"{self.mean:.1f} mIoU on PASCAL-5i, {self.ways}-way {self.shots}-shot ({self.where})"


_ROWS = (
    Reported("piclip", "pfenet", 1, 1, (61.7, 69.5, 55.4, 56.3), 60.8, "Table 1"),
    Reported("piclip", "pfenet", 5, 1, (63.1, 70.7, 55.8, 57.9), 61.9, "Table 1"),
    Reported("piclip", "piclip", 1, 1, (67.4, 76.5, 71.3, 69.4), 71.2, "Table 1, PI-CLIP (PFENet)"),
    Reported("piclip", "piclip", 5, 1, (70.4, 78.2, 72.4, 70.2), 72.8, "Table 1, PI-CLIP (PFENet)"),
    Reported("lfss", "pfenet", 1, 1, (61.7, 69.5, 55.4, 56.3), 60.8, "Table 1, pixel-level supervision"),
    Reported("lfss", "lfss", 1, 1, (59.9, 69.1, 56.7, 58.9), 61.2, "Table 1, image-level supervision (class names)"),
    Reported("qgnet", "pfenet", 1, 1, (61.7, 69.5, 55.4, 56.3), 60.8, "Table I"),
    Reported("qgnet", "pfenet", 5, 1, (63.1, 70.7, 55.8, 57.9), 61.9, "Table I"),
    Reported("qgnet", "qgnet", 1, 1, (63.4, 69.4, 55.1, 58.4), 61.6, "Table I, 473 x 473"),
    Reported("qgnet", "qgnet", 5, 1, (64.7, 71.0, 53.6, 61.6), 62.8, "Table I, 473 x 473"),
    # reported as a fraction (0.0483) and scored against the whole image's classes: not comparable with the others
    Reported("clip-dinoiser-support", "clip-dinoiser-support", 1, 1, (None, None, None, None), 4.83, "Table 1"),
    Reported("clip-dinoiser-support", "clip-dinoiser-support", 1, 2, (None, None, None, None), 4.05, "Table 1"),
)


def reported(paper: str, method: str, shots: int = 1, ways: int = 1) -> Reported:
    """The row of ``paper``'s table for ``method`` at ``ways``-way ``shots``-shot, or an error naming those it has."""
    for row in _ROWS:
        if (row.paper, row.method, row.shots, row.ways) == (paper, method, shots, ways):
            return row
    have = [f"{r.paper}/{r.method} {r.ways}-way {r.shots}-shot" for r in _ROWS]
    raise unknown("reported result", f"{paper}/{method} {ways}-way {shots}-shot", have)


def all_reported() -> tuple[Reported, ...]:
    return _ROWS
