"""What the toy world knows about each test episode: the strata that ask where each method wins.

A 1-way test episode (a query, K supports, class ``c``) is described from the split's class index (the
pixels of each class in each image) and the toy classes' shapes and fills; nothing a method predicts
enters (:func:`describe_episodes`):

* ``target_share`` -- the share of the query's pixels that are ``c``;
* ``support_share`` -- the mean share of ``c`` in the K support images;
* ``shape_distractor`` -- the query also holds another class of ``c``'s shape (a striped star beside a
  dotted star): what a prototype of shape alone confuses;
* ``fill_distractor`` -- the query also holds another class of ``c``'s fill;
* ``query_classes`` -- how many classes the query holds;
* ``class_id`` -- the episode's class (to check that saved results are these episodes).

:func:`episode_strata` groups the episodes by these, with bounds fixed before any method is scored:
target size by the tertiles of ``target_share`` over the episodes themselves, one fold's at a time (small /
medium / large), the number of classes as 1 / 2 / 3 or more, the support-query size gap as a factor of 2
between the support and the query shares. Shapes and fills exist in the toy world only: the strata are the
toy tier's.

The tertiles' cut-offs are ``numpy.quantile``'s 1/3 and 2/3 quantiles (linear interpolation) of the episodes'
target shares. Small: a share below the first cut-off; medium: from the first cut-off up to, not including,
the second; large: from the second up. A share equal to a cut-off goes to the larger stratum. Shares are
pixel counts over a fixed area, so such ties occur, and the three strata are then not exactly equal in size.
"""
from __future__ import annotations

import numpy as np

from fsslib.data.episodes import EpisodeDataset
from fsslib.data.toyworld import class_attributes
from fsslib.errors import FsslibError

SIZE_GAP = 2.0  # support and query shares further apart than this factor: "support larger" / "support smaller"
STRATA = {  # each grouping's strata, in reading order
    "target size": ("small", "medium", "large"),
    "shape distractor in the query": ("no", "yes"),
    "fill distractor in the query": ("no", "yes"),
    "classes in the query": ("1", "2", "3+"),
    "support vs query size": ("support smaller", "similar", "support larger"),
}


def describe_episodes(dataset: EpisodeDataset) -> dict[str, np.ndarray]:
    """Per 1-way test episode of ``dataset``, in its order: the descriptors of the module docstring, each (E,)."""
    if dataset.source.benchmark.name != "toy" or dataset.ways != 1 or dataset.mode != "test":
        raise FsslibError(f"Episode strata describe 1-way toy test episodes; got {dataset.ways}-way {dataset.mode} "
                          f"episodes of {dataset.source.benchmark.name!r}.",
                          "build the EpisodeDataset on the toy benchmark with mode='test' and ways=1.")
    presence = dataset.source.presence
    area = {}  # pixels per image (the toy world's are all one size, but read them rather than assume it)

    def share(name: str, class_id: int) -> float:
        if name not in area:
            area[name] = dataset.source.load(name)[1].size
        return presence.get(name, {}).get(class_id, 0) / area[name]

    rows = []
    for index in range(len(dataset)):
        query, supports, (class_id,) = dataset.sample_names(index)
        shape, fill = class_attributes(class_id)
        others = [class_attributes(other) for other in presence.get(query, {}) if other != class_id]
        rows.append((share(query, class_id), np.mean([share(name, class_id) for name in supports[0]]),
                     any(s == shape for s, _ in others), any(f == fill for _, f in others), 1 + len(others), class_id))
    columns = list(zip(*rows))
    return {"target_share": np.array(columns[0]), "support_share": np.array(columns[1]),
            "shape_distractor": np.array(columns[2], dtype=bool), "fill_distractor": np.array(columns[3], dtype=bool),
            "query_classes": np.array(columns[4]), "class_id": np.array(columns[5])}


def episode_strata(descriptors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The stratum of every episode under each grouping: {grouping: (E,) array of stratum names}; target size
    by the tertiles of these episodes' ``target_share``, a share at a cut-off in the larger stratum (module docstring)."""
    target = descriptors["target_share"]
    low, high = np.quantile(target, [1 / 3, 2 / 3])
    ratio = descriptors["support_share"] / np.maximum(target, 1e-12)
    return {
        "target size": np.where(target < low, "small", np.where(target < high, "medium", "large")),
        "shape distractor in the query": np.where(descriptors["shape_distractor"], "yes", "no"),
        "fill distractor in the query": np.where(descriptors["fill_distractor"], "yes", "no"),
        "classes in the query": np.where(descriptors["query_classes"] >= 3, "3+", descriptors["query_classes"].astype(str)),
        "support vs query size": np.where(ratio > SIZE_GAP, "support larger",
                                          np.where(ratio < 1 / SIZE_GAP, "support smaller", "similar")),
    }
