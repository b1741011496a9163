"""Data sources, side by side: the generated world (`sources.world`), your own logs through a mapping, MovieLens
among them (`sources.logs`), and the validation every data set passes before the stages read it
(`sources.validate`).

Built on `core` only.
"""
