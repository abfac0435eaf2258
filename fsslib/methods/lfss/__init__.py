"""LFSS (Wang et al., ICASSP 2023), language-guided FSS: its components.

* :mod:`~fsslib.methods.lfss.vlmd` -- VLMD: MaskCLIP pseudo masks and the self-supported refiner (Eqs. 2-5).
* :mod:`~fsslib.methods.lfss.dps` -- distributed prototype supervision (Eqs. 6-12).
* :mod:`~fsslib.methods.lfss.ccm` -- complementary correlation matching (Eqs. 13-17).
"""
