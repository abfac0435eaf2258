"""PI-CLIP's priors on its paper's other two baselines, PI-CLIP(BAM) (``--method piclip-bam``,
:mod:`fsslib.methods.piclip.bam`) and PI-CLIP(HDMNet) (``--method piclip-hdmnet``, :mod:`fsslib.methods.piclip.hdmnet`):
Table 1's other rows; Tables 3-4 run on HDMNet (``VARIANTS``, the same as on PFENet).

The CLIP priors (:class:`~fsslib.methods.piclip.model.ClipPriors`: the refined VTP twice, then the VVP of the last
two CLIP blocks per shot) take the place of the baseline's own prior; the rest of the baseline is unchanged.

* **PI-CLIP(HDMNet)** follows the official code (vangjin/PI-CLIP ``model/PI_CLIP.py``, which is PI-CLIP on HDMNet):
  the priors replace HDMNet's two similarity maps. They enter ``query_merge`` times 10 (``img_cam * 10,
  clip_similarity * 10``) and each matching level of the transformer unscaled (its ``Transformer.py`` concatenates
  ``img_cam`` and ``clip_similarity`` to the correlation: ``match_dims + 2 + 2K`` channels). The support image is
  blanked outside its mask before the ResNet, as HDMNet does.
* **PI-CLIP(BAM)** has no public code. The priors replace BAM's one-channel prior in ``init_merge``, times 10 as
  the official code enters them into HDMNet's ``query_merge``; BAM's ensemble and K-shot weights are unchanged.

Training: PI-CLIP trains 30 epochs with batch 4 at 1 shot and 2 at 5 shots, every other setting the baseline's
(Sec. 4.1): the paper presets. The official PI-CLIP(HDMNet) config names 200 epochs and batch 8 (``config/pascal``; HDMNet's own config: batch 4);
fsslib follows the paper's text. The toy presets are the baselines' toy presets with the toy CLIP.
"""
from __future__ import annotations

from fsslib.methods.piclip import PRESETS as PFENET_PRESETS

TOY_CLIP = {key: PFENET_PRESETS["toy"]["options"][key] for key in ("clip", "clip_pretrained")}
PAPER_CLIP = {"vtp_temperature": PFENET_PRESETS["paper"]["options"]["vtp_temperature"]}
PAPER_SCHEDULE = dict(epochs=30, batch_size=4)  # Sec. 4.1 (5-shot: batch_size=2)


def plug_in_presets(baseline: dict[str, dict]) -> dict[str, dict]:
    """A baseline's presets with PI-CLIP's: the toy CLIP at the toy tier; 30 epochs, batch 4, tau = 0.01 on paper."""
    toy, paper = baseline["toy"], baseline["paper"]
    return {"toy": {**toy, "options": {**toy.get("options", {}), **TOY_CLIP}},
            "paper": {**paper, **PAPER_SCHEDULE, "options": {**paper.get("options", {}), **PAPER_CLIP}}}


def shots_fixed_by_training(options: dict) -> bool:
    """The K-shot weighting has K inputs and the VVP one channel per shot: a K-shot model fits K-shot episodes."""
    return True
