"""Few masks: which train images keep their masks and the `semi` pipeline's branches (`labelled`), ClassMix with a
mean teacher (`classmix`) and the labelled-then-unlabelled batch sampler (`sampler`).
"""
