"""Datasets: VOC and manifest readers, checks, the synthetic stand-in and incremental task splits."""
from wsseg.data.check import CheckReport, check_dataset
from wsseg.data.dataset import dataset_splits, load_samples
from wsseg.data.images import decode_image, read_image, read_mask
from wsseg.data.samples import ObjectAnnotation, Problem, Sample
from wsseg.data.splits import IncrementalTask, incremental_split, parse_task
from wsseg.data.synth import make_synthetic_voc

__all__ = [
    "CheckReport", "IncrementalTask", "ObjectAnnotation", "Problem", "Sample", "check_dataset",
    "dataset_splits", "decode_image", "incremental_split", "load_samples", "make_synthetic_voc", "parse_task",
    "read_image", "read_mask",
]
