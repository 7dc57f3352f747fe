"""fedsilo: cross-silo federated learning for medical imaging.

Three jobs share one federation code path built on Flower:

- synthesis (FedGAN): federated DCGAN fine-tuning of fundus images after CT pre-training;
- segmentation (FedGIN): federated 2D U-Net organ segmentation across CT and MRI sites with
  GIN intensity augmentation;
- classification: federated diabetic-retinopathy grading;

and privacy auditing of what the trained models and client updates leak.
"""

__version__ = "0.1.0"
