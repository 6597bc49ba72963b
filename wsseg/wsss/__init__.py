"""Weak labels: semantic segmentation from image-level tags (WSSS).

The methods table (`methods`) and the ablation over it (`ablation`); the CAM classifiers (`classifiers`) and their
training (`training`, `batch_augment`, `adversarial_erasing`, `ensemble`); CAM methods (`cams`); the dense CRF
(`crf`, `crf_torch`), its thresholds and levels (`thresholds`, `pass_levels`) and the refinement of CAMs into
pseudo masks (`refinement`, `pseudo_masks`); affinity's random walk (`random_walk`); saliency (`saliency`,
`saliency_guidance`); self-training (`self_training`); and the segmentor modes that are WSSS methods (`sec`, `band`).
"""
