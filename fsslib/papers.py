"""What the four papers report on PASCAL-5i and COCO-20i, in one place: the lessons set these numbers beside the toy
tier's, and the paper-tier grids (``papermill_runs/paper/``) beside fsslib's own.

Each :class:`Reported` row is one system of one paper's table, mIoU (%) per fold (0-3) and the mean, with
ResNet-50, as printed (``tests/test_papers.py`` finds each row in the paper's text, inside the table it names,
when ``shared/papers`` is beside the checkout). The baselines are the rows the papers print for them (PFENet's
PASCAL-5i row is its own TPAMI number, 60.8 at 1-shot, in every paper that lists it). On COCO-20i, PI-CLIP prints
PFENet with ResNet-101 only, so that row is left out; LFSS and QGNet print PFENet's ResNet-50 row.

    from fsslib.papers import reported
    reported("piclip", "piclip").mean                      # 71.2
    reported("piclip", "pfenet", shots=5)                  # PFENet's 5-shot row of PI-CLIP's Table 1
    reported("piclip", "piclip-hdmnet").folds              # PI-CLIP on HDMNet, Table 1's best row
    reported("qgnet", "qgnet", benchmark="coco").folds     # QGNet's Table III, 473 x 473
    QGNET_PRIOR_RECALL.recall                              # QGNet's Table VII, the prior region map's recall
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
    benchmark: str = "pascal"  # "pascal" (PASCAL-5i) or "coco" (COCO-20i)

    @property
    def label(self) -> str:
        name = BENCHMARK_NAMES[self.benchmark]
        return f"{self.mean:.1f} mIoU on {name}, {self.ways}-way {self.shots}-shot ({self.where})"


BENCHMARK_NAMES = {"pascal": "PASCAL-5i", "coco": "COCO-20i"}


_ROWS = (
    Reported("piclip", "pfenet", 1, 1, (61.7, 69.5, 55.4, 56.3), 60.8, "Table 1"),
    Reported("piclip", "pfenet", 5, 1, (63.1, 70.7, 55.8, 57.9), 61.9, "Table 1"),
    Reported("piclip", "piclip", 1, 1, (67.4, 76.5, 71.3, 69.4), 71.2, "Table 1, PI-CLIP (PFENet)"),
    Reported("piclip", "piclip", 5, 1, (70.4, 78.2, 72.4, 70.2), 72.8, "Table 1, PI-CLIP (PFENet)"),
    Reported("piclip", "bam", 1, 1, (68.9, 73.6, 67.6, 61.1), 67.8, "Table 1"),
    Reported("piclip", "bam", 5, 1, (70.6, 75.1, 70.8, 67.2), 70.9, "Table 1"),
    Reported("piclip", "piclip-bam", 1, 1, (72.4, 80.2, 71.6, 70.5), 73.7, "Table 1, PI-CLIP (BAM)"),
    Reported("piclip", "piclip-bam", 5, 1, (72.6, 80.6, 73.5, 72.0), 74.7, "Table 1, PI-CLIP (BAM)"),
    Reported("piclip", "hdmnet", 1, 1, (71.0, 75.4, 68.9, 62.1), 69.4, "Table 1"),
    Reported("piclip", "hdmnet", 5, 1, (71.3, 76.2, 71.3, 68.5), 71.8, "Table 1"),
    Reported("piclip", "piclip-hdmnet", 1, 1, (76.4, 83.5, 74.7, 72.8), 76.8, "Table 1, PI-CLIP (HDMNet)"),
    Reported("piclip", "piclip-hdmnet", 5, 1, (76.7, 83.8, 75.2, 73.2), 77.2, "Table 1, PI-CLIP (HDMNet)"),
    Reported("lfss", "pfenet", 1, 1, (61.7, 69.5, 55.4, 56.3), 60.8, "Table 1, pixel-level supervision"),
    Reported("lfss", "lfss", 1, 1, (59.9, 69.1, 56.7, 58.9), 61.2, "Table 1, image-level supervision (class names)"),
    Reported("qgnet", "pfenet", 1, 1, (61.7, 69.5, 55.4, 56.3), 60.8, "Table I"),
    Reported("qgnet", "pfenet", 5, 1, (63.1, 70.7, 55.8, 57.9), 61.9, "Table I"),
    Reported("qgnet", "qgnet", 1, 1, (63.4, 69.4, 55.1, 58.4), 61.6, "Table I, 473 x 473"),
    Reported("qgnet", "qgnet", 5, 1, (64.7, 71.0, 53.6, 61.6), 62.8, "Table I, 473 x 473"),
    # reported as a fraction (0.0483) and scored against the query image tensor, not its mask: not comparable
    Reported("clip-dinoiser-support", "clip-dinoiser-support", 1, 1, (None, None, None, None), 4.83, "Table 1"),
    Reported("clip-dinoiser-support", "clip-dinoiser-support", 1, 2, (None, None, None, None), 4.05, "Table 1"),
    Reported("piclip", "piclip", 1, 1, (36.1, 42.3, 37.3, 37.7), 38.4, "Table 2, PI-CLIP (PFENet)", "coco"),
    Reported("piclip", "piclip", 5, 1, (40.4, 45.6, 39.9, 38.6), 41.1, "Table 2, PI-CLIP (PFENet)", "coco"),
    Reported("lfss", "pfenet", 1, 1, (36.5, 38.6, 34.5, 33.8), 35.8, "Table 2, ResNet-50, pixel-level supervision",
             "coco"),
    Reported("lfss", "lfss", 1, 1, (42.9, 51.8, 44.4, 46.8), 46.4, "Table 2, ResNet-50, image-level supervision",
             "coco"),
    Reported("qgnet", "pfenet", 1, 1, (36.5, 38.6, 34.5, 33.8), 35.8, "Table III, ResNet-50, 473 x 473", "coco"),
    Reported("qgnet", "pfenet", 5, 1, (36.5, 43.3, 37.8, 38.4), 39.0, "Table III, ResNet-50, 473 x 473", "coco"),
    Reported("qgnet", "qgnet", 1, 1, (36.7, 41.4, 38.7, 36.6), 38.3, "Table III, 473 x 473", "coco"),
    Reported("qgnet", "qgnet", 5, 1, (41.5, 48.1, 46.3, 43.6), 44.8, "Table III, 473 x 473", "coco"),
)


@dataclass(frozen=True)
class ReportedRecall:
    """A region map's recall (%) at each threshold, one row of QGNet's Table VII (Eq. 16: the share of object
    pixels in ``[V > threshold]``)."""

    region_map: str
    thresholds: tuple[float, ...]
    recall: tuple[float, ...]
    where: str


# Table VII's guided-map row is empty in the paper's text (shared/papers): only the prior map's row is printed
QGNET_PRIOR_RECALL = ReportedRecall("prior region map", (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                                    (99.9, 99.9, 99.1, 96.5, 89.7, 76.2, 54.7, 28.2, 6.6),
                                    "Table VII, PASCAL-5i fold 0")


def reported(paper: str, method: str, shots: int = 1, ways: int = 1, benchmark: str = "pascal") -> Reported:
    """The row of ``paper``'s table for ``method`` at ``ways``-way ``shots``-shot on ``benchmark``, or an error naming
    those it has."""
    for row in _ROWS:
        if (row.paper, row.method, row.shots, row.ways, row.benchmark) == (paper, method, shots, ways, benchmark):
            return row
    have = [_described(r.paper, r.method, r.ways, r.shots, r.benchmark) for r in _ROWS]
    raise unknown("reported result", _described(paper, method, ways, shots, benchmark), have)


def has_reported(paper: str, method: str, shots: int = 1, ways: int = 1, benchmark: str = "pascal") -> bool:
    """Whether ``paper`` reports ``method`` at that setting (:func:`reported` would find its row)."""
    return any((r.paper, r.method, r.shots, r.ways, r.benchmark) == (paper, method, shots, ways, benchmark)
               for r in _ROWS)


def _described(paper: str, method: str, ways: int, shots: int, benchmark: str) -> str:
    """A setting as the error of :func:`reported` names it, e.g. ``piclip/piclip 1-way 1-shot`` (PASCAL-5i unnamed)."""
    return f"{paper}/{method} {ways}-way {shots}-shot" + ("" if benchmark == "pascal" else f" {BENCHMARK_NAMES[benchmark]}")


def all_reported() -> tuple[Reported, ...]:
    return _ROWS
