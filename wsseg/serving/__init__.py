"""A trained segmenter put to use: exported for Triton/KServe (`export`), its masks as COCO instances (`instances`),
and the images prediction reads: a folder, a manifest or a store prefix (`image_sources`).
"""
