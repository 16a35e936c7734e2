"""Transfer to labelled tasks: one engine, three heads.

The engine (:mod:`.engine`, :mod:`.loop`) fine-tunes any task by the same protocol and predicts the test split
in batches; :mod:`.protocol` runs it over seeds × label fractions and writes one result record. Each task
contributes only what differs, the way smp composes encoder + decoder + head: its model around the backbone, its
loss, augmentation, prediction and metric (:mod:`.classification`, :mod:`.segmentation`, :mod:`.detection`).
The linear probe (:mod:`.linear`) and the protocol are torch-free, so the trivial floors
(:mod:`pipeline.floors`) share them without importing torch.
"""
