"""Few-shot building blocks that several papers share (HSNet's ``model/base`` is the pattern).

* :mod:`fsslib.blocks.masks` -- masks at feature resolution and prototypes (masked average pooling).
* :mod:`fsslib.blocks.correlation` -- cosine correlations (to positions, to prototypes), min-max
  normalisation, PFENet's prior.
* :mod:`fsslib.blocks.decoders` -- PFENet's Feature Enrichment Module (FEM), the ASPP decoder
  (CANet/ASGNet/LFSS) and weight init.
* :mod:`fsslib.blocks.priors` -- prior sources for PFENet-style decoders (PFENet's own prior).
* :mod:`fsslib.blocks.frozen` -- holding frozen pretrained models (CLIP, backbones, teachers).
* :mod:`fsslib.blocks.base_learner` -- BAM's base learner (PSPNet on a fold's base classes), shared by BAM and
  HDMNet.
* :mod:`fsslib.blocks.ensemble` -- BAM's learner ensemble: scene difference, K-shot weights, base-class suppression.
* :mod:`fsslib.blocks.hierarchical` -- HDMNet's hierarchical dense matching transformer and its correlation
  distillation loss, shared by HDMNet and PI-CLIP on HDMNet.

They are pure tensor functions and ``nn.Module`` s with no knowledge of a method: a method
composes them; it never reaches into another method for them.
"""
from fsslib.blocks.correlation import (
    COSINE_EPS,
    masked_support_prior,
    max_cosine_similarity,
    min_max_normalise,
    prior_region_map,
    prototype_cosine,
)
from fsslib.blocks.decoders import (
    ASPPDecoder,
    AtrousSpatialPyramidPooling,
    FeatureEnrichmentModule,
    aspp_rates,
    feature_reduction,
    kaiming_init,
    pyramid_bins,
)
from fsslib.blocks.base_learner import BaseLearner, PyramidPooling, base_class_index, base_class_table
from fsslib.blocks.ensemble import LearnerEnsemble, ShotWeighting, base_foreground, gram_matrix, scene_difference
from fsslib.blocks.hierarchical import HierarchicalTransformer, TransformerSize, correlation_distillation_loss
from fsslib.blocks.masks import blank_outside_masks, foreground_weights, masked_average_pooling, resize_masks

__all__ = ["BaseLearner", "HierarchicalTransformer", "LearnerEnsemble", "TransformerSize", "correlation_distillation_loss", "PyramidPooling", "ShotWeighting", "base_class_index", "base_class_table", "base_foreground",
           "gram_matrix", "scene_difference", "blank_outside_masks", "ASPPDecoder", "AtrousSpatialPyramidPooling", "COSINE_EPS", "FeatureEnrichmentModule", "aspp_rates",
           "feature_reduction", "foreground_weights", "kaiming_init", "masked_average_pooling", "masked_support_prior",
           "max_cosine_similarity", "min_max_normalise", "prior_region_map", "prototype_cosine", "pyramid_bins", "resize_masks"]
