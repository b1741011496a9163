"""Ranking stage: point-in-time ranking samples (Spark), the TorchRec ranker with SAIL features (control / +emb /
+sid / +both), single-process and torchrun training through DistributedModelParallel with resumable checkpoints,
the LightGBM baseline, and the test-period evaluation.

Modules: samples (Spark job), features (extended sample contract, variant specs), standin (content-only stand-in
for the SAIL feature export), data (encoding, batches), model (arches, RankerTrain, build_ranker), distributed
(DMP, plan, checkpoints, item-table export), train, lgbm, evaluate, synthetic (fast fixtures), cli. A trained
variant is served as an A/B arm by `offline_eval.serve`.
"""
