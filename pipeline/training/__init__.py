"""Pieces every training loop shares (SimCLR pretraining and the transfer tasks): the optimiser factory, frozen
feature extraction and the kNN monitor. Neither :mod:`pipeline.ssl` nor :mod:`pipeline.transfer` owns them."""
