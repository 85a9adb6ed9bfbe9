"""Other frameworks' weights in and out of ssl_jax.

  python -m ssl_jax.weights import --format=fssb --model=resnet50_jigsaw SRC --workdir=W
  python -m ssl_jax.weights export W --format=torchvision --out=resnet50.pth

Formats in: ``fssb`` (FAIR's Caffe2 pickles, detection pickles included), ``vissl``
(VISSL / ClassyVision checkpoints), ``torchvision`` (a ResNet state dict), ``ssl_jax`` (another
run). Formats out: ``torchvision``, ``detectron2``. Every format goes through one torch-style
layout (``layout``); PyTorch files are read and written without torch (``torchfile``).
MODEL_ZOO.md lists FAIR's released models with the commands that import and benchmark them.
"""
