"""KFP pipelines: each module defines one `@dsl.pipeline`, listed in PIPELINES for compiling and running."""
from pipelines.ablation import ablation
from pipelines.incremental import incremental
from pipelines.predict import label_images
from pipelines.semi import semi
from pipelines.supervised import supervised
from pipelines.wsss import wsss

PIPELINES = {"wsss": wsss, "supervised": supervised, "ablation": ablation, "predict": label_images,
             "semi": semi, "incremental": incremental}
