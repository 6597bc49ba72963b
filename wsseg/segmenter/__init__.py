"""The segmenter: an mmseg dataset over pseudo masks in a store (`dataset`), configs per preset (`configs`),
a checkpoint hook that keeps a resumable copy in the store (`hooks`), torchrun support (`distributed`) and
prediction with optional test-time augmentation (`inference`). Import the submodules you need: each pulls
in torch or mmseg.
"""
