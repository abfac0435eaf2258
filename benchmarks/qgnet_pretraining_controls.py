"""Why the toy prior extractors learn so little: controls of the MoCo v2 recipe on the toy world (toy tier).

    python benchmarks/qgnet_pretraining_controls.py    # -> benchmarks/results/qgnet_pretraining_controls_toy.md

The shipped toy prior extractors (``fsslib/checkpoints/toy_qgnet_prior_*.json``) reach a held-out
kNN mAP barely above a randomly initialised network. Each control below changes one thing of the
shipped recipe (global loss only, ``--steps`` steps each, same seed) and reports the InfoNCE loss
over its first and last 10% of steps, at most 100 (chance: log(1 + queue size); the first steps
sit below it while the queue still holds its random initial keys) and the key encoder's kNN mAP on
the 500 held-out scenes of the pretraining curve (random init 0.10, supervised toy ResNet 0.80 on
the acceptance scenes):

* the learning rate of MoCo v2 scaled linearly to batch 64 (0.0075 instead of 0.06);
* a fresher queue (512 keys = 8 steps, as MoCo's CIFAR demo, instead of 4096 = 64 steps: at
  momentum 0.99 the oldest keys come from a key encoder 47% different);
* larger BatchNorm batches for the keys (2 chunks of 32 instead of 8 of 8);
* object-centric training scenes (one object covering about 40% of the image, as the toy DINO's);
* weak views (crops of 80-100%, no colour change or blur): can the network match two views at all?
"""
from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fsslib.pretrain.qgnet_prior.train import PriorSettings, train_prior_extractor
from fsslib.provenance import run_provenance

RESULTS = Path(__file__).resolve().parent / "results"
CONTROLS = {  # label -> the settings changed
    "shipped recipe (global loss)": {},
    "lr 0.0075 (MoCo's 0.03 at batch 256, scaled)": {"lr": 0.0075},
    "queue 512 (8 steps of keys)": {"queue_size": 512},
    "keys' BatchNorm over 32 images": {"key_chunks": 2},
    "object-centric scenes": {"scenes": "object_centric"},
    "weak views": {"views": "weak"},
    "object-centric scenes, weak views": {"scenes": "object_centric", "views": "weak"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = PriorSettings(steps=args.steps, losses="global", eval_every=args.steps)
    lines = ["# Controls of the toy prior extractor's MoCo v2 recipe (toy tier)", "",
             f"`python benchmarks/qgnet_pretraining_controls.py --steps {args.steps}`: global loss, {args.steps} steps, "
             f"batch {base.batch_size}, seed {base.seed}; {run_provenance('cpu')}.", "",
             f"| control | InfoNCE loss, mean of the first / last {max(1, min(100, args.steps // 10))} steps | "
             "chance log(1 + queue) | held-out kNN mAP |",
             "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as scratch:
        for label, changes in tqdm(CONTROLS.items(), desc="controls"):
            settings = replace(base, **changes)
            metadata = train_prior_extractor(Path(scratch) / "control.pt", settings, progress=False, workers=1,
                                             n_eval_images=100)
            loss = metadata["loss"]["global"]
            lines.append(f"| {label} | {loss['first_steps']:.2f} / {loss['last_steps']:.2f} | "
                         f"{np.log(1 + settings.queue_size):.2f} | {metadata['curve'][-1]['knn_map']:.3f} |")
    out = RESULTS / "qgnet_pretraining_controls_toy.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
