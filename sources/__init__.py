"""Data sources, side by side: the generated world (`sources.world`), your own logs mapped onto the contracts
(`sources.logs`, with MovieLens as a shipped mapping, and `sources.negatives` for positive-only logs), and the
validation every data set passes before the stages read it (`sources.validate`).

Built on `core` only.
"""
