"""Moved: the ImageFolder data to ``labelreg.data.imagefolder``, the classification task to
``labelreg.tasks.classification``. Re-exported here while importers move."""
from labelreg.data.imagefolder import (IMAGE_EXTENSIONS, RESIZE_RATIO, ImageFolderDataset, build_cls_augmentations,
                                       build_cls_dataset, check_class_names, check_same_classes, cls_sizes,
                                       list_classes, load_image, write_toy_imagefolder)
from labelreg.tasks.classification import (build_classifier, build_task, classification_losses, classifier_forward,
                                           evaluate_checkpoint, evaluate_classifier, model_from_checkpoint,
                                           topk_names, train)
from labelreg.tasks.classification import evaluate_checkpoint as evaluate_classifier_checkpoint

__all__ = ["IMAGE_EXTENSIONS", "RESIZE_RATIO", "ImageFolderDataset", "build_classifier", "build_cls_augmentations",
           "build_cls_dataset", "build_task", "check_class_names", "check_same_classes", "classification_losses",
           "classifier_forward", "cls_sizes", "evaluate_checkpoint", "evaluate_classifier",
           "evaluate_classifier_checkpoint", "list_classes", "load_image", "model_from_checkpoint", "topk_names",
           "train", "write_toy_imagefolder"]
